"""Decode a hook request without building the resources no rule will read.

A large chart holds thousands of resources and the relevance filter (``relevance.py``) drops all but
a few hundred of them; building every one as Python objects first cost more than everything else
the service does. So the request body is decoded in layers (msgspec typed decoding):

1. the request's own members (hook, context, ...) in full, each prefetch value as raw JSON bytes;
2. a prefetch Bundle as its skeleton: ``resourceType``, ``id``, ``type``, ``link`` and, per entry,
   the resource as raw JSON bytes; any other prefetch value (a read, an OperationOutcome, a list or
   a number the request check rejects) in full;
3. each entry's resource as a :class:`SkeletonResource`: only the members that the patient check,
   the duplicate check and the relevance filter read (``SKELETON_MEMBERS``), built in full;
4. the resources that survive those checks are decoded in full from their bytes (orjson) and
   validated with ``fhir.resources`` exactly as before (``record.read_patient_record``).

A member of an unexpected shape at layers 1-2 (``entry`` not a list, an entry not an object,
``prefetch`` not an object) makes that part fall back to the full decoder, so odd shapes take
today's path. The filter reads the same values either way, so the same resources are kept with the
same content (``tests/fhir/test_selective.py`` checks this on generated Bundles).

Malformed JSON gives the same 400 as before: the body is checked for UTF-8 first (msgspec does not
check the bytes of strings it skips) and any error msgspec raises sends the body through
``orjson.loads``, which decides. One known difference: a number outside the range of a double
(``1e400``) in a member nothing reads is accepted; orjson refuses it although it is valid JSON.

If the relevance filter starts reading another member, add it to ``SKELETON_MEMBERS``.
"""

from __future__ import annotations

import codecs
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import orjson
from msgspec.structs import astuple

# Members decoded for every resource: its type, ``id`` (a Patient's identity and duplicate
# detection) and ``subject`` (whose resource it is).
HEAD_MEMBERS = ("resourceType", "id", "subject")
# Members the relevance filter reads. They are kept as raw JSON: a chart repeats the same codes
# thousands of times, so the filter's answer is remembered by their bytes (``_RelevanceMemo``) and
# they are decoded only when that answer is not known yet.
RELEVANCE_MEMBERS = (
    "code", "valueString", "valueCodeableConcept", "component", "bodySite", "note",
    "codeCodeableConcept", "codeReference", "medicationCodeableConcept", "medicationReference",
    "procedureCode", "description",
)
SKELETON_MEMBERS = HEAD_MEMBERS + RELEVANCE_MEMBERS

_UNSET = msgspec.UNSET
_ABSENT = msgspec.Raw(b"")  # an absent member: no JSON value is empty


class _Skeleton(msgspec.Struct, gc=False):
    # Decoded as plain JSON (``Any``): a member of the wrong type reaches the checks as it is, as
    # it would from the full decoder.
    resourceType: Any = _UNSET
    id: Any = _UNSET
    subject: Any = _UNSET
    code: msgspec.Raw = _ABSENT
    valueString: msgspec.Raw = _ABSENT
    valueCodeableConcept: msgspec.Raw = _ABSENT
    component: msgspec.Raw = _ABSENT
    bodySite: msgspec.Raw = _ABSENT
    note: msgspec.Raw = _ABSENT
    codeCodeableConcept: msgspec.Raw = _ABSENT
    codeReference: msgspec.Raw = _ABSENT
    medicationCodeableConcept: msgspec.Raw = _ABSENT
    medicationReference: msgspec.Raw = _ABSENT
    procedureCode: msgspec.Raw = _ABSENT
    description: msgspec.Raw = _ABSENT


assert _Skeleton.__struct_fields__ == SKELETON_MEMBERS
_HEAD_COUNT = len(HEAD_MEMBERS)


class _Entry(msgspec.Struct, gc=False):
    resource: msgspec.Raw | msgspec.UnsetType = _UNSET


class _SkeletonEntry(msgspec.Struct, gc=False):
    resource: _Skeleton | msgspec.UnsetType = _UNSET


class _Bundle(msgspec.Struct, gc=False):
    resourceType: Any = _UNSET
    id: Any = _UNSET
    type: Any = _UNSET
    link: Any = _UNSET
    entry: list[_Entry] | msgspec.UnsetType = _UNSET


class _SkeletonBundle(msgspec.Struct, gc=False):
    entry: list[_SkeletonEntry] | msgspec.UnsetType = _UNSET


class _HookBody(msgspec.Struct, gc=False):
    """The members of a CDS Hooks request the service reads (others are ignored, as before)."""

    hook: Any = _UNSET
    hookInstance: Any = _UNSET
    fhirServer: Any = _UNSET
    fhirAuthorization: Any = _UNSET
    context: Any = _UNSET
    prefetch: dict[str, msgspec.Raw] | msgspec.UnsetType = _UNSET
    extension: Any = _UNSET


_body_decoder = msgspec.json.Decoder(_HookBody)
_bundle_decoder = msgspec.json.Decoder(_Bundle)
_skeleton_decoder = msgspec.json.Decoder(_Skeleton)
_skeleton_bundle_decoder = msgspec.json.Decoder(_SkeletonBundle)
_UTF8_CHUNK = 1 << 16


class SkeletonResource(dict[str, Any]):
    """A resource of which only ``HEAD_MEMBERS`` are decoded (they are its items); the members the
    relevance filter reads and the whole resource are kept as raw JSON.

    A dict, so the patient and duplicate checks read it at dict speed; relevance is decided by
    :func:`is_relevant` and the resource is decoded by :func:`whole_resource`, never read directly.
    """

    __slots__ = ("raw", "raw_members")

    def __init__(self, head: dict[str, Any], raw_members: tuple[bytes, ...], raw: msgspec.Raw,
                 ) -> None:
        super().__init__(head)
        self.raw = raw
        self.raw_members = raw_members  # in RELEVANCE_MEMBERS order, b"" where absent

    def relevance_members(self) -> dict[str, Any]:
        """What the relevance filter reads, as the full decoder gives it."""
        members: dict[str, Any] = {"resourceType": self.get("resourceType")}
        for name, raw in zip(RELEVANCE_MEMBERS, self.raw_members, strict=True):
            if raw:
                members[name] = _loads(raw)
        return members

    def __repr__(self) -> str:  # never the patient data itself
        return f"SkeletonResource({self.get('resourceType')!r})"


def whole_resource(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """The resource fully decoded (a no-op for one that already is)."""
    if type(resource) is SkeletonResource:
        return _loads(resource.raw)
    return resource


class _RelevanceMemo:
    """A relevance filter's answers by the bytes of the members it reads (a pure function of
    them). Bounded: emptied when full; long members (free text rarely repeats) are not kept."""

    MAX_ENTRIES = 50_000
    MAX_KEY_BYTES = 2_048

    def __init__(self) -> None:
        self.answers: dict[tuple[Any, ...], bool] = {}


_memos: weakref.WeakKeyDictionary[Any, _RelevanceMemo] = weakref.WeakKeyDictionary()
_memos_lock = threading.Lock()


def is_relevant(
    resource: Mapping[str, Any], relevance_filter: Callable[[Mapping[str, Any]], bool]
) -> bool:
    """``relevance_filter(resource)``, for a skeleton from its members' bytes."""
    if type(resource) is not SkeletonResource:
        return relevance_filter(resource)
    memo = _memos.get(relevance_filter)
    if memo is None:
        with _memos_lock:
            memo = _memos.setdefault(relevance_filter, _RelevanceMemo())
    key = (resource.get("resourceType"), resource.raw_members)
    answer = memo.answers.get(key)
    if answer is None:
        answer = relevance_filter(resource.relevance_members())
        if sum(map(len, resource.raw_members)) <= memo.MAX_KEY_BYTES:
            if len(memo.answers) >= memo.MAX_ENTRIES:
                memo.answers.clear()
            memo.answers[key] = answer
    return answer


class MalformedJSON(ValueError):
    """The request body is not valid JSON (orjson's verdict)."""


def decode_hook_body(raw: bytes | bytearray | memoryview) -> Any:
    """The request body as the full decoder would give it, except that prefetch Bundles hold
    :class:`SkeletonResource` entries. Raises :class:`MalformedJSON` exactly when
    ``orjson.loads`` would refuse the body (see the module note on numbers)."""
    _check_utf8(raw)
    try:
        head = _body_decoder.decode(raw)
    except msgspec.ValidationError:
        return _loads(raw)  # not an object, or prefetch is not an object: the old path
    except (msgspec.DecodeError, RecursionError):
        return _loads(raw)  # raises MalformedJSON, or decodes what orjson accepts
    body: dict[str, Any] = {
        name: getattr(head, name)
        for name in _HookBody.__struct_fields__
        if name != "prefetch" and getattr(head, name) is not _UNSET
    }
    if head.prefetch is not _UNSET:
        body["prefetch"] = {key: decode_prefetch_value(value)
                            for key, value in head.prefetch.items()}
    return body


def decode_prefetch_value(raw: msgspec.Raw) -> Any:
    """One prefetch value: a Bundle as its skeleton, anything else in full."""
    try:
        bundle = _bundle_decoder.decode(raw)
    except msgspec.ValidationError:
        return _loads(raw)  # not an object, or an entry list of an unexpected shape
    if bundle.resourceType != "Bundle":
        return _loads(raw)  # a read (Patient/123) or an OperationOutcome: small
    value: dict[str, Any] = {
        name: getattr(bundle, name)
        for name in ("resourceType", "id", "type", "link")
        if getattr(bundle, name) is not _UNSET
    }
    if bundle.entry is _UNSET:
        return value
    try:
        skeletons = _skeleton_bundle_decoder.decode(raw).entry
    except msgspec.ValidationError:
        skeletons = None  # a resource that is not an object: entry by entry
    entries: list[dict[str, Any]] = []
    for index, entry in enumerate(bundle.entry):
        if entry.resource is _UNSET:
            entries.append({})
        elif skeletons is None:
            entries.append({"resource": _skeleton_of(entry.resource)})
        else:
            skeleton = skeletons[index].resource
            assert skeleton is not _UNSET
            entries.append({"resource": _resource_from(skeleton, entry.resource)})
    value["entry"] = entries
    return value


def _skeleton_of(raw: msgspec.Raw) -> Any:
    try:
        skeleton = _skeleton_decoder.decode(raw)
    except msgspec.ValidationError:
        return _loads(raw)  # not an object: as it is
    return _resource_from(skeleton, raw)


def _resource_from(skeleton: _Skeleton, raw: msgspec.Raw) -> Any:
    if skeleton.resourceType == "Bundle":
        return decode_prefetch_value(raw)  # a Bundle inside a Bundle is read through
    fields = astuple(skeleton)
    head = {name: value for name, value in zip(HEAD_MEMBERS, fields, strict=False)
            if value is not _UNSET}
    return SkeletonResource(head, tuple(map(bytes, fields[_HEAD_COUNT:])), raw)


def _loads(raw: bytes | bytearray | memoryview | msgspec.Raw) -> Any:
    """orjson's decoding of (part of) the body. msgspec has checked the syntax already, but orjson
    also refuses numbers beyond a double's range, and then the request is refused as before."""
    try:
        return orjson.loads(memoryview(raw))
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(str(exc)) from exc


def _check_utf8(raw: bytes | bytearray | memoryview) -> None:
    """msgspec skips over the strings it is not asked for without checking their bytes; orjson
    refuses a body with invalid UTF-8 anywhere. Checked in chunks, so no copy of the body."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    try:
        for start in range(0, len(view), _UTF8_CHUNK):
            decoder.decode(view[start:start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise MalformedJSON("request body is not valid UTF-8") from exc
