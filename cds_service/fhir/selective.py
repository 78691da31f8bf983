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
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import orjson

# Members read before a resource is decoded in full: the type, ``id`` (a Patient's identity and
# duplicate detection), ``subject`` (whose resource it is) and every member the relevance filter
# reads. Everything is decoded as plain JSON (``Any``), so a member of the wrong type reaches the
# filter as it is, as it would from the full decoder.
SKELETON_MEMBERS = (
    "resourceType", "id", "subject",
    "code", "valueString", "valueCodeableConcept", "component", "bodySite", "note",
    "codeCodeableConcept", "codeReference", "medicationCodeableConcept", "medicationReference",
    "procedureCode", "description",
)

_UNSET = msgspec.UNSET


class _Skeleton(msgspec.Struct):
    resourceType: Any = _UNSET
    id: Any = _UNSET
    subject: Any = _UNSET
    code: Any = _UNSET
    valueString: Any = _UNSET
    valueCodeableConcept: Any = _UNSET
    component: Any = _UNSET
    bodySite: Any = _UNSET
    note: Any = _UNSET
    codeCodeableConcept: Any = _UNSET
    codeReference: Any = _UNSET
    medicationCodeableConcept: Any = _UNSET
    medicationReference: Any = _UNSET
    procedureCode: Any = _UNSET
    description: Any = _UNSET


assert _Skeleton.__struct_fields__ == SKELETON_MEMBERS


class _Entry(msgspec.Struct):
    resource: msgspec.Raw | msgspec.UnsetType = _UNSET


class _Bundle(msgspec.Struct):
    resourceType: Any = _UNSET
    id: Any = _UNSET
    type: Any = _UNSET
    link: Any = _UNSET
    entry: list[_Entry] | msgspec.UnsetType = _UNSET


class _HookBody(msgspec.Struct):
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
_UTF8_CHUNK = 1 << 16


class SkeletonResource(Mapping[str, Any]):
    """A resource whose skeleton members are decoded and whose whole JSON is kept as bytes.

    Reads like the resource for the skeleton members; :meth:`whole` decodes all of it.
    """

    __slots__ = ("_members", "_raw")

    def __init__(self, members: dict[str, Any], raw: msgspec.Raw) -> None:
        self._members = members
        self._raw = raw

    def whole(self) -> Any:
        return _loads(self._raw)

    def get(self, key: str, default: Any = None) -> Any:
        return self._members.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._members[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:  # never the patient data itself
        return f"SkeletonResource({self._members.get('resourceType')!r})"


def whole_resource(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """The resource fully decoded (a no-op for one that already is)."""
    if type(resource) is SkeletonResource:
        return resource.whole()
    return resource


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
    if bundle.entry is not _UNSET:
        entries: list[dict[str, Any]] = []
        for entry in bundle.entry:
            if entry.resource is _UNSET:
                entries.append({})
                continue
            entries.append({"resource": _skeleton_of(entry.resource)})
        value["entry"] = entries
    return value


def _skeleton_of(raw: msgspec.Raw) -> Any:
    try:
        skeleton = _skeleton_decoder.decode(raw)
    except msgspec.ValidationError:
        return _loads(raw)  # not an object: as it is
    if skeleton.resourceType == "Bundle":
        return decode_prefetch_value(raw)  # a Bundle inside a Bundle is read through
    members = {
        name: value
        for name in SKELETON_MEMBERS
        if (value := getattr(skeleton, name)) is not _UNSET
    }
    return SkeletonResource(members, raw)


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
