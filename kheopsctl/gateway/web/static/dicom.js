// Just enough DICOM Part 10 reading to sort files before an upload: is it DICOM at all (the "DICM" marker), is it
// a DICOMDIR, and which SOP Instance UID it holds (so the STOW reply's FailedSOPSequence names files).
// Reads only the first 64 KiB of each file.
const HEAD = 65536;
const DICOMDIR_CLASS = "1.2.840.10008.1.3.10";
const IMPLICIT_LE = "1.2.840.10008.1.2";
const LONG_VRS = new Set(["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]);

function text(view, offset, length) {
  let s = "";
  for (let i = 0; i < length && offset + i < view.byteLength; i++) s += String.fromCharCode(view.getUint8(offset + i));
  return s.replace(/[\0 ]+$/, "");
}

// Walk elements from `offset`; calls visit(group, element, valueOffset, length) until it returns true.
function walk(view, offset, explicit, visit) {
  while (offset + 8 <= view.byteLength) {
    const group = view.getUint16(offset, true), element = view.getUint16(offset + 2, true);
    let length, header;
    if (explicit) {
      const vr = String.fromCharCode(view.getUint8(offset + 4), view.getUint8(offset + 5));
      if (LONG_VRS.has(vr)) {
        if (offset + 12 > view.byteLength) return;
        length = view.getUint32(offset + 8, true); header = 12;
      } else { length = view.getUint16(offset + 6, true); header = 8; }
    } else { length = view.getUint32(offset + 4, true); header = 8; }
    if (visit(group, element, offset + header, length)) return;
    if (length === 0xffffffff) return;  // undefined length (a sequence): not needed for what we read
    offset += header + length;
  }
}

export async function inspect(file) {
  if (file.name.toUpperCase() === "DICOMDIR") return { kind: "dicomdir" };
  if (file.name === ".DS_Store" || file.size < 132) return { kind: "junk" };
  const view = new DataView(await file.slice(0, HEAD).arrayBuffer());
  if (text(view, 128, 4) !== "DICM") return { kind: "junk" };
  let transferSyntax = "", sopClass = "", sop = "", datasetStart = 132;
  walk(view, 132, true, (group, element, at, length) => {
    if (group !== 0x0002) return true;
    if (element === 0x0002) sopClass = text(view, at, length);
    if (element === 0x0003) sop = text(view, at, length);
    if (element === 0x0010) transferSyntax = text(view, at, length);
    datasetStart = at + length;
    return false;
  });
  if (sopClass === DICOMDIR_CLASS) return { kind: "dicomdir" };
  if (!sop) {  // no meta copy: read (0008,0018) from the dataset
    walk(view, datasetStart, transferSyntax !== IMPLICIT_LE, (group, element, at, length) => {
      if (group > 0x0008 || (group === 0x0008 && element > 0x0018)) return true;
      if (group === 0x0008 && element === 0x0018) { sop = text(view, at, length); return true; }
      return false;
    });
  }
  return { kind: "dicom", sop };
}
