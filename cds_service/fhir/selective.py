"""Decode a hook request without building the resources no rule will read.

A large chart holds thousands of resources and the relevance filter (``relevance.py``) drops all but
a few hundred of them; building every one as Python objects first cost more than everything else
the service does. So the request body is decoded in layers (msgspec typed decoding):

1. the request's own members (hook, context, ...) in full, each prefetch value as raw JSON bytes;
2. a prefetch Bundle as its skeleton: ``resourceType``, ``id``, ``type``, ``link`` and, per entry,
   the resource as raw JSON bytes; any other prefetch value (a read, an OperationOutcome, a list or
   a number the request check rejects) in full;
3. each entry's resource as a :class:`Skeleton`: its type, ``id`` and ``subject`` decoded, the
   members the relevance filter reads kept as raw JSON (the filter's answer is remembered by their
   bytes, and they are decoded only when it is not known), the whole resource kept as raw JSON;
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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
import orjson
from msgspec.structs import astuple

# Members read for every resource: its type, ``id`` (a Patient's identity and duplicate
# detection) and ``subject`` (whose resource it is).
HEAD_MEMBERS = ("resourceType", "id", "subject")
# Members the relevance filter reads. They are kept as raw JSON: a chart repeats the same codes
# thousands of times, so the filter's answer is remembered by their bytes (``is_relevant``) and
# they are decoded only when that answer is not known yet.
RELEVANCE_MEMBERS = (
    "code", "valueString", "valueCodeableConcept", "component", "bodySite", "note",
    "codeCodeableConcept", "codeReference", "medicationCodeableConcept", "medicationReference",
    "procedureCode", "description",
)

UNSET = _UNSET = msgspec.UNSET
_ABSENT = msgspec.Raw(b"")  # an absent member: no JSON value is empty
_HEAD_COUNT = len(HEAD_MEMBERS)
_RELEVANCE_END = _HEAD_COUNT + len(RELEVANCE_MEMBERS)


class Skeleton(msgspec.Struct, gc=False):
    """A resource of which only ``HEAD_MEMBERS`` are decoded; the members the relevance filter
    reads and the whole resource are kept as raw JSON.

    A read-only mapping of its head members (what the type, patient and duplicate checks read);
    relevance is decided by :func:`is_relevant` and the resource decoded by
    :func:`whole_resource`. Not reference-tracked (``gc=False``): it holds no cycles, and tracking
    ten thousand of them made the garbage collector the largest cost of a large request.
    """

    # Head members: plain JSON (``Any``), so a member of the wrong type reaches the checks as it
    # is, as it would from the full decoder.
    resourceType: Any = _UNSET
    id: Any = _UNSET
    # Raw: the same few references repeat (``read_patient_record`` decides once per distinct one),
    # and thousands of decoded dicts would be most of the skeleton's memory.
    subject: msgspec.Raw = _ABSENT
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
    # The whole resource, set after decoding (a JSON member by this name is overwritten).
    whole: msgspec.Raw = msgspec.field(default=_ABSENT, name="__selective_whole__")

    def get(self, key: str, default: Any = None) -> Any:
        if key == "subject":
            return default if self.subject is _ABSENT else _loads(self.subject)
        if key in HEAD_MEMBERS:
            value = getattr(self, key)
            return default if value is _UNSET else value
        return default

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _UNSET)
        if value is _UNSET:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in HEAD_MEMBERS
                if getattr(self, name) is not _UNSET and getattr(self, name) is not _ABSENT)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _UNSET) is not _UNSET

    def relevance_key(self) -> tuple[bytes, ...]:
        """The bytes of the members the relevance filter reads, in RELEVANCE_MEMBERS order."""
        return tuple(map(bytes, astuple(self)[_HEAD_COUNT:_RELEVANCE_END]))

    def relevance_members(self) -> dict[str, Any]:
        """What the relevance filter reads, as the full decoder gives it."""
        members: dict[str, Any] = {}
        if self.resourceType is not _UNSET:
            members["resourceType"] = self.resourceType
        for name in RELEVANCE_MEMBERS:
            raw = getattr(self, name)
            if raw is not _ABSENT:
                members[name] = _loads(raw)
        return members

    def __repr__(self) -> str:  # never the patient data itself
        return f"Skeleton({self.resourceType!r})"


class SkeletonEntry(msgspec.Struct, gc=False):
    """A Bundle entry of a skeleton: reads like ``{"resource": <Skeleton>}``."""

    resource: Skeleton | msgspec.UnsetType = _UNSET

    def get(self, key: str, default: Any = None) -> Any:
        if key == "resource" and self.resource is not _UNSET:
            return self.resource
        return default

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _UNSET)
        if value is _UNSET:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(("resource",) if self.resource is not _UNSET else ())

    def __len__(self) -> int:
        return 0 if self.resource is _UNSET else 1


Mapping.register(Skeleton)
Mapping.register(SkeletonEntry)


class _RawEntry(msgspec.Struct, gc=False):
    resource: msgspec.Raw | msgspec.UnsetType = _UNSET


class _Bundle(msgspec.Struct, gc=False):
    resourceType: Any = _UNSET
    id: Any = _UNSET
    type: Any = _UNSET
    link: Any = _UNSET
    entry: list[SkeletonEntry] | msgspec.UnsetType = _UNSET


class _RawBundle(msgspec.Struct, gc=False):
    entry: list[_RawEntry] | msgspec.UnsetType = _UNSET


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
_raw_bundle_decoder = msgspec.json.Decoder(_RawBundle)
_skeleton_decoder = msgspec.json.Decoder(Skeleton)
_UTF8_CHUNK = 1 << 16


def whole_resource(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """The resource fully decoded (a no-op for one that already is)."""
    if type(resource) is Skeleton:
        return _loads(resource.whole)
    return resource


def plain_json(value: Any) -> Any:
    """``value`` with every skeleton decoded in full: plain JSON again, for a caller that sends
    what it fetched on as a request body (the CLI's prefetch) rather than reading it."""
    if type(value) is Skeleton:
        return whole_resource(value)
    if type(value) is SkeletonEntry:
        return {} if value.resource is _UNSET else {"resource": whole_resource(value.resource)}
    if isinstance(value, dict):
        return {key: plain_json(member) for key, member in value.items()}
    if isinstance(value, list):
        return [plain_json(member) for member in value]
    return value


class _RelevanceMemo:
    """A relevance filter's answers by the bytes of the members it reads (a pure function of
    them). Bounded by the bytes of its keys (emptied when full); a long member (free text rarely
    repeats) is not kept. A bench chart of 10,000 resources fills about 1 MB of keys."""

    MAX_BYTES = 8 * 1024 * 1024
    MAX_KEY_BYTES = 2_048

    def __init__(self) -> None:
        self.answers: dict[tuple[Any, ...], bool] = {}
        self.size = 0

    def remember(self, key: tuple[Any, ...], size: int, answer: bool) -> None:
        if size > self.MAX_KEY_BYTES:
            return
        if self.size + size > self.MAX_BYTES:
            self.answers.clear()
            self.size = 0
        self.answers[key] = answer
        self.size += size


_memos: weakref.WeakKeyDictionary[Any, _RelevanceMemo] = weakref.WeakKeyDictionary()
_memos_lock = threading.Lock()


def relevance_decider(
    relevance_filter: Callable[[Mapping[str, Any]], bool],
) -> Callable[[Mapping[str, Any]], bool]:
    """``relevance_filter`` for any resource; a skeleton's answer comes from its members' bytes
    (remembered per filter, across requests)."""
    memo = _memos.get(relevance_filter)
    if memo is None:
        with _memos_lock:
            memo = _memos.setdefault(relevance_filter, _RelevanceMemo())
    answers = memo.answers

    def decide(resource: Mapping[str, Any]) -> bool:
        if type(resource) is not Skeleton:
            return relevance_filter(resource)
        members = resource.relevance_key()
        key = (resource.resourceType, members)
        answer = answers.get(key)
        if answer is None:
            answer = relevance_filter(resource.relevance_members())
            memo.remember(key, sum(map(len, members)), answer)
        return answer

    return decide


def is_relevant(
    resource: Mapping[str, Any], relevance_filter: Callable[[Mapping[str, Any]], bool]
) -> bool:
    """``relevance_filter(resource)``; for a skeleton, from its members' bytes."""
    return relevance_decider(relevance_filter)(resource)


class MalformedJSON(ValueError):
    """The request body is not valid JSON (orjson's verdict)."""


def decode_hook_body(raw: bytes | bytearray | memoryview) -> Any:
    """The request body as the full decoder would give it, except that prefetch Bundles hold
    :class:`Skeleton` resources. Raises :class:`MalformedJSON` exactly when ``orjson.loads``
    would refuse the body (see the module note on numbers)."""
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


def decode_fhir_json(raw: bytes) -> Any:
    """A FHIR server's answer (the fallback when prefetch is missing): a Bundle as its skeleton,
    anything else in full. Raises :class:`MalformedJSON` when ``orjson.loads`` would."""
    _check_utf8(raw)
    try:
        return decode_prefetch_value(raw)
    except (msgspec.DecodeError, RecursionError):
        return _loads(raw)  # raises MalformedJSON, or decodes what orjson accepts


def decode_prefetch_value(raw: msgspec.Raw | bytes) -> Any:
    """One prefetch value: a Bundle as its skeleton, anything else in full."""
    try:
        bundle = _bundle_decoder.decode(raw)
    except msgspec.ValidationError:
        # not an object, or an entry or resource that is not an object: as it is
        return _loads(raw)
    if bundle.resourceType != "Bundle":
        return _loads(raw)  # a read (Patient/123) or an OperationOutcome: small
    value: dict[str, Any] = {
        name: getattr(bundle, name)
        for name in ("resourceType", "id", "type", "link")
        if getattr(bundle, name) is not _UNSET
    }
    if bundle.entry is _UNSET:
        return value
    raws = _raw_bundle_decoder.decode(raw).entry
    assert raws is not _UNSET and len(raws) == len(bundle.entry)
    entries: list[Any] = bundle.entry
    for index, (entry, raw_entry) in enumerate(zip(entries, raws, strict=True)):
        resource = entry.resource
        if resource is _UNSET:
            continue
        resource.whole = raw_entry.resource
        if resource.resourceType == "Bundle":  # a Bundle inside a Bundle is read through
            entries[index] = {"resource": decode_prefetch_value(raw_entry.resource)}
    value["entry"] = entries
    return value


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
