"""A strict, streaming walk of a Part-10 DICOM element stream: the check that makes every parser agree.

Why: two DICOM parsers may read one byte stream differently. pydicom keeps the *last* of two elements with the
same tag, DCMTK (Orthanc) the *first*; an element out of tag order, after the pixel data or encoded with a
different VR is another place where they can part. The gateway approves a part from pydicom's reading and the
PACS files it from its own, so any such part is refused before anything is sent on.

Rules (a part breaking any of them is refused as "cannot understand", 0xC000):
- a 128-byte preamble and ``DICM``; the file meta group (0002) in explicit VR little endian, its tags strictly
  increasing, its group length (0002,0000), when present, equal to the group's real length, and a Transfer
  Syntax UID; deflated transfer syntaxes are refused (their element stream cannot be walked without inflating);
- then the data set in the transfer syntax's encoding (implicit VR LE, explicit VR BE, explicit VR LE for every
  other syntax), its tags strictly increasing at every nesting level: the top level, and each item of each
  sequence (recursively, defined and undefined lengths, items (FFFE,E000), item delimiters (FFFE,E00D),
  sequence delimiters (FFFE,E0DD)); undefined-length UN is read as implicit VR LE (as both parsers do);
- in explicit VR every VR is a known one; undefined lengths only for SQ, UN and encapsulated pixel data (whose
  fragments are items of defined length ended by a sequence delimiter); an element never overruns the item or
  sequence holding it; public elements of the top level are never sent as UN (pydicom would read them with
  their dictionary VR, DCMTK keeps them as unknown); no group 0000-0007 element in the data set;
- the walk goes on past the pixel data to the end of the part: trailing elements (padding, signatures) must
  still be in order, so nothing we did not read can follow and supersede what we read;
- nesting is at most ``MAX_DEPTH`` deep.

``Scanner`` is push-driven: ``feed()`` every byte of the part in order, then ``end()``. It holds only the
bytes of the header it is reading (at most 12), never a value, so it may watch a whole multi-gigabyte part as
it streams. ``at_pixels`` turns true once the top-level pixel data element's header was read: the header
prefix is then complete. ``cut(limit)`` says the caller stopped reading its prefix here: from then on no
top-level element may have a tag at or below ``limit`` (the caller read no such element beyond the prefix).
"""

from __future__ import annotations

from pydicom.datadict import DicomDictionary

PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # float, double float, pixel data
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 16

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})

_READ, _OPTIONAL, _SKIP = 0, 1, 2  # requests from the walk: n bytes, n bytes or the end, skip n bytes


class ElementError(ValueError):
    """The element stream is not one we can walk cleanly (or breaks a rule above)."""


def _sequence_vr(tag: int) -> bool:
    entry = DicomDictionary.get(tag)
    return entry is not None and entry[0] == "SQ"


class Scanner:
    def __init__(self) -> None:
        self.transfer_syntax: str | None = None
        self.at_pixels = False
        self.done = False
        self.pos = 0
        self._limit: int | None = None
        self._top_open: int | None = None  # tag of the top-level element being read, if any
        self._acc = bytearray()
        self._gen = self._part10()
        self._req = next(self._gen)
        self._failed: ElementError | None = None

    # ---- driving ----------------------------------------------------------------------------------------

    def feed(self, data) -> None:
        if self._failed is not None:
            raise self._failed
        mv = memoryview(data).cast("B")
        i, n = 0, len(mv)
        try:
            while i < n:
                if self.done:
                    raise ElementError("bytes after the end of the data set")
                kind, want = self._req
                if kind == _SKIP:
                    take = min(want, n - i)
                    i += take
                    if take == want:
                        self._req = self._gen.send(None)
                    else:
                        self._req = (_SKIP, want - take)
                    continue
                if not self._acc and n - i >= want:  # the common case: the whole request is in this chunk
                    got = bytes(mv[i:i + want])
                    i += want
                    self._req = self._gen.send(got)
                    continue
                need = want - len(self._acc)
                take = min(need, n - i)
                self._acc += mv[i:i + take]
                i += take
                if take == need:
                    got = bytes(self._acc)
                    self._acc.clear()
                    self._req = self._gen.send(got)
        except StopIteration:
            self.done = True
            if i < n:
                self._fail(ElementError("bytes after the end of the data set"))
        except ElementError as e:
            self._fail(e)

    def end(self) -> None:
        """The part ended here: it must end between two top-level elements."""
        if self._failed is not None:
            raise self._failed
        if self.done:
            return
        if self._req[0] != _OPTIONAL or self._acc:
            self._fail(ElementError("the data set ends inside an element"))
        try:
            self._gen.send(None)
        except StopIteration:
            self.done = True
            return
        except ElementError as e:
            self._fail(e)
        self._fail(ElementError("the data set ends inside an element"))

    def cut(self, limit: int) -> None:
        """The caller's prefix ends here; it relied on no top-level element at or below ``limit`` after it."""
        if self._top_open is not None and self._top_open <= limit:
            self._fail(ElementError("an element the header depends on lies beyond the header prefix"))
        self._limit = limit

    def _fail(self, e: ElementError):
        self._failed = e
        raise e

    # ---- the walk (a generator: yields requests, receives bytes) ----------------------------------------

    def _read(self, n: int):
        data = yield (_READ, n)
        self.pos += n
        return data

    def _skip(self, n: int):
        if n:
            yield (_SKIP, n)
            self.pos += n

    def _part10(self):
        pre = yield from self._read(132)
        if pre[128:132] != b"DICM":
            raise ElementError("no DICM preamble")
        yield from self._meta()
        ts = self.transfer_syntax or ""
        if ts in DEFLATED:
            raise ElementError("deflated transfer syntax")
        implicit, little = ts == IMPLICIT_LE, ts != EXPLICIT_BE
        yield from self._dataset(implicit, little, end=None, depth=0, top=True)

    def _meta(self):
        last, group_end = -1, None
        start = self.pos
        while True:
            if group_end is not None and self.pos == group_end:
                break
            head = yield from self._read(4)
            group = int.from_bytes(head[0:2], "little")
            if group != 0x0002:
                if group_end is not None:
                    raise ElementError("file meta group length disagrees with the group")
                # the first data set element: hand its tag bytes back by walking it from here
                self._pending_head = head
                break
            tag = (group << 16) | int.from_bytes(head[2:4], "little")
            if tag <= last:
                raise ElementError("file meta elements duplicated or out of order")
            last = tag
            vr = yield from self._read(2)
            if vr in _LONG_VRS:
                length = int.from_bytes((yield from self._read(6))[2:6], "little")
            elif vr in _SHORT_VRS:
                length = int.from_bytes((yield from self._read(2)), "little")
            else:
                raise ElementError("unknown VR in the file meta group")
            if length == UNDEFINED or vr == b"SQ":
                raise ElementError("undefined length or sequence in the file meta group")
            if length > 1 << 16:
                raise ElementError("file meta element too long")
            value = yield from self._read(length)
            if tag == 0x00020000:
                if vr != b"UL" or length != 4:
                    raise ElementError("malformed file meta group length")
                group_end = self.pos + int.from_bytes(value, "little")
            elif tag == 0x00020010:
                self.transfer_syntax = value.rstrip(b"\x00 ").decode("ascii", "replace")
        if group_end is not None and self.pos > group_end:
            raise ElementError("file meta group length disagrees with the group")
        if not self.transfer_syntax:
            raise ElementError("no transfer syntax in the file meta group")
        del start

    def _head(self, implicit: bool, little: bool, optional: bool = False):
        """Read one element header: (tag, vr or None, length). None at a clean end (optional only).

        Every header starts with 8 bytes (tag + length, tag + VR + short length, or tag + VR + reserved), so
        they are asked for at once: one round trip through the walk per element, not three."""
        order = "little" if little else "big"
        pending = getattr(self, "_pending_head", None)
        if pending is not None:
            self._pending_head = None
            t = pending + (yield from self._read(4))
        elif optional:
            t = yield (_OPTIONAL, 8)
            if t is None:
                return None
            self.pos += 8
        else:
            t = yield from self._read(8)
        tag = (int.from_bytes(t[0:2], order) << 16) | int.from_bytes(t[2:4], order)
        if tag >> 16 == 0xFFFE or implicit:  # items and delimiters never carry a VR
            return tag, None, int.from_bytes(t[4:8], order)
        vr = t[4:6]
        if vr in _SHORT_VRS:
            return tag, vr, int.from_bytes(t[6:8], order)
        if vr in _LONG_VRS:
            return tag, vr, int.from_bytes((yield from self._read(4)), order)
        raise ElementError("unknown VR")

    def _dataset(self, implicit: bool, little: bool, end: int | None, depth: int, top: bool = False,
                 delimited: bool = False):
        """Elements until ``end`` (defined length), an item delimiter (``delimited``) or the part's end (top)."""
        if depth > MAX_DEPTH:
            raise ElementError("sequences nested too deep")
        last = -1
        while True:
            if end is not None and self.pos == end:
                return
            h = yield from self._head(implicit, little, optional=top)
            if h is None:
                return  # the part ended between two top-level elements
            tag, vr, length = h
            if tag == ITEM_END:
                if not delimited or length != 0:
                    raise ElementError("unexpected item delimiter")
                return
            if tag >> 16 == 0xFFFE:
                raise ElementError("item or delimiter outside a sequence")
            if tag <= last:
                raise ElementError("data elements duplicated or out of order")
            last = tag
            group = tag >> 16
            if group == 0x0002 or (top and group < 0x0008):
                raise ElementError("file meta or command element in the data set")
            if top:
                if self._limit is not None and tag <= self._limit:
                    raise ElementError("an element the header depends on lies beyond the header prefix")
                if vr == b"UN" and not group & 1 and tag in DicomDictionary:
                    raise ElementError("a public element sent as UN")
                self._top_open = tag
                if tag in PIXEL_TAGS and not self.at_pixels:
                    self.at_pixels = True
            yield from self._value(tag, vr, length, implicit, little, end, depth)
            if top:
                self._top_open = None

    def _value(self, tag, vr, length, implicit, little, end, depth):
        value_end = None if length == UNDEFINED else self.pos + length
        if end is not None and (value_end is None or value_end > end) and length != UNDEFINED:
            raise ElementError("an element overruns the item holding it")
        if length == UNDEFINED:
            if tag in PIXEL_TAGS and vr not in (b"OB", b"OW"):
                raise ElementError("undefined-length pixel data outside explicit VR OB/OW")
            if tag in PIXEL_TAGS:
                yield from self._fragments(little)
            elif vr == b"SQ" or (implicit and vr is None):
                yield from self._sequence(implicit, little, None, depth)
            elif vr == b"UN":
                yield from self._sequence(True, True, None, depth)  # undefined-length UN: implicit VR LE
            else:
                raise ElementError("undefined length on a value that cannot have one")
            if end is not None and self.pos > end:
                raise ElementError("an element overruns the item holding it")
        elif vr == b"SQ" or (implicit and _sequence_vr(tag)):
            yield from self._sequence(implicit, little, value_end, depth)
        else:
            yield from self._skip(length)

    def _sequence(self, implicit, little, end, depth):
        while True:
            if end is not None and self.pos == end:
                return
            tag, _, length = yield from self._head(True, little)
            if tag == SEQ_END:
                if end is not None or length != 0:
                    raise ElementError("unexpected sequence delimiter")
                return
            if tag != ITEM:
                raise ElementError("a sequence holds something other than items")
            if length == UNDEFINED:
                yield from self._dataset(implicit, little, None, depth + 1, delimited=True)
            else:
                item_end = self.pos + length
                if end is not None and item_end > end:
                    raise ElementError("an item overruns its sequence")
                yield from self._dataset(implicit, little, item_end, depth + 1)
            if end is not None and self.pos > end:
                raise ElementError("an item overruns its sequence")

    def _fragments(self, little):
        while True:
            tag, _, length = yield from self._head(True, little)
            if tag == SEQ_END:
                if length != 0:
                    raise ElementError("malformed end of encapsulated pixel data")
                return
            if tag != ITEM or length == UNDEFINED:
                raise ElementError("malformed encapsulated pixel data")
            yield from self._skip(length)


def scan_bytes(data: bytes) -> Scanner:
    """Walk a whole part held in memory (tests, fuzzing); raises ElementError."""
    s = Scanner()
    s.feed(data)
    s.end()
    return s
