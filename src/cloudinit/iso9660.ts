/**
 * A minimal ISO 9660 writer: one root directory, a handful of small files, and a Joliet
 * tree so Linux shows the real (lower-case, hyphenated) names. It exists to build
 * cloud-init NoCloud seeds in memory: rcloud streams the bytes into a remote libvirt
 * storage pool, so there is no local file system to run xorriso/genisoimage against.
 *
 * Section numbers refer to ECMA-119 2nd edition (= ISO 9660:1988). Joliet is Microsoft's
 * "Joliet Specification" (1995), an ECMA-119 Supplementary Volume Descriptor (§8.5).
 *
 * Image layout (all sizes in 2048-byte logical sectors):
 *   0-15  system area (§6.2.1), zero
 *   16    Primary Volume Descriptor (§8.4)
 *   17    Joliet Supplementary Volume Descriptor (§8.5)
 *   18    Volume Descriptor Set Terminator (§8.3)
 *   19-22 L and M path tables (§9.4) of the primary, then of the Joliet hierarchy
 *   23-   primary root directory, Joliet root directory, then file extents
 * Both hierarchies point at the same file extents, so file data is stored once.
 */

export type IsoErrorCode = "BAD_VOLUME_ID" | "BAD_FILE_NAME" | "DUPLICATE_FILE_NAME" | "TOO_MANY_FILES" | "TOO_LARGE" | "BAD_DATE";

export class IsoError extends Error {
  override readonly name = "IsoError";
  constructor(
    readonly code: IsoErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface IsoFile {
  name: string;
  data: Uint8Array;
}

export interface IsoOptions {
  /** 1-32 of [A-Za-z0-9_]. Upper-cased in the PVD (d-characters, §7.4.1); kept as given in Joliet. */
  volumeId: string;
  /** Stamped on descriptors and directory records. Fixed default so output is reproducible. */
  date?: Date;
}

export const SECTOR_SIZE = 2048;
/** Seeds are a few KiB; the cap keeps a bad caller from making us allocate without bound. */
export const MAX_ISO_BYTES = 16 * 1024 * 1024;
export const MAX_FILES = 256;
const DEFAULT_DATE = new Date(Date.UTC(2000, 0, 1, 0, 0, 0));

const VOLUME_ID_RE = /^[A-Za-z0-9_]{1,32}$/;
// 64 UCS-2 units is Joliet's name limit. "." and names ending in "." are refused because
// Linux's Joliet reader strips a trailing dot, so the name would not be seen as written.
const FILE_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

// Fixed sector numbers (see layout above).
const PVD_SECTOR = 16;
const PATH_TABLE_SECTOR = 19; // L primary, M primary, L Joliet, M Joliet: one sector each
const FIRST_DIR_SECTOR = 23;
const ROOT_PATH_TABLE_SIZE = 10; // §9.4: 8 fixed bytes + 1-byte root identifier + 1 pad byte

interface Entry {
  data: Uint8Array;
  primaryId: Uint8Array; // d-characters "NAME.EXT;1" (§7.5)
  jolietId: Uint8Array; // UCS-2 big-endian
  extent: number; // first sector of the data
}

export function buildIso(files: readonly IsoFile[], opts: IsoOptions): Uint8Array {
  const { volumeId } = opts;
  if (typeof volumeId !== "string" || !VOLUME_ID_RE.test(volumeId)) {
    throw new IsoError("BAD_VOLUME_ID", `volume id must be 1-32 characters of [A-Za-z0-9_], got ${JSON.stringify(volumeId)}`);
  }
  const date = opts.date ?? DEFAULT_DATE;
  const year = date.getUTCFullYear();
  // §9.1.5 stores the year as an offset from 1900 in one byte.
  if (!Number.isFinite(date.getTime()) || year < 1900 || year > 2155) {
    throw new IsoError("BAD_DATE", "date must be a valid date between 1900 and 2155");
  }
  if (files.length > MAX_FILES) throw new IsoError("TOO_MANY_FILES", `at most ${MAX_FILES} files, got ${files.length}`);

  const seen = new Set<string>();
  const takenPrimary = new Set<string>();
  const entries: Entry[] = [];
  for (const f of files) {
    if (typeof f.name !== "string" || !FILE_NAME_RE.test(f.name) || f.name.endsWith(".")) {
      throw new IsoError("BAD_FILE_NAME", `file name must be 1-64 characters of [A-Za-z0-9._-] not ending in ".", got ${JSON.stringify(f.name)}`);
    }
    // Case-insensitive: Joliet readers (Windows, Linux with check=relaxed) may fold case.
    const folded = f.name.toLowerCase();
    if (seen.has(folded)) throw new IsoError("DUPLICATE_FILE_NAME", `duplicate file name ${JSON.stringify(f.name)}`);
    seen.add(folded);
    if (!(f.data instanceof Uint8Array)) throw new IsoError("BAD_FILE_NAME", `data of ${f.name} is not a Uint8Array`);
    const primary = primaryIdentifier(f.name, takenPrimary);
    takenPrimary.add(primary);
    entries.push({ data: f.data, primaryId: ascii(primary), jolietId: ucs2(f.name), extent: 0 });
  }

  // §9.3: records after "." and ".." are ordered by file identifier. For d-characters and
  // UCS-2 big-endian, byte order equals the specified collation.
  const primaryOrder = [...entries].sort((a, b) => compareBytes(a.primaryId, b.primaryId));
  const jolietOrder = [...entries].sort((a, b) => compareBytes(a.jolietId, b.jolietId));

  const primaryDirSize = directorySize(primaryOrder.map((e) => e.primaryId.length));
  const jolietDirSize = directorySize(jolietOrder.map((e) => e.jolietId.length));
  const primaryDirSector = FIRST_DIR_SECTOR;
  const jolietDirSector = primaryDirSector + primaryDirSize / SECTOR_SIZE;

  let next = jolietDirSector + jolietDirSize / SECTOR_SIZE;
  for (const e of entries) {
    // Empty files get extent 0 and no sectors, as mkisofs does; readers never read them.
    if (e.data.length === 0) continue;
    e.extent = next;
    next += Math.ceil(e.data.length / SECTOR_SIZE);
  }
  const totalSectors = next;
  if (totalSectors * SECTOR_SIZE > MAX_ISO_BYTES) {
    throw new IsoError("TOO_LARGE", `image would be ${totalSectors * SECTOR_SIZE} bytes, limit is ${MAX_ISO_BYTES}`);
  }

  const img = new Uint8Array(totalSectors * SECTOR_SIZE);
  const dirDate = directoryDate(date);
  const vdDate = descriptorDate(date);

  const primaryRoot = { sector: primaryDirSector, size: primaryDirSize };
  const jolietRoot = { sector: jolietDirSector, size: jolietDirSize };

  writeVolumeDescriptor(img, PVD_SECTOR, "primary", volumeId, totalSectors, PATH_TABLE_SECTOR, primaryRoot, dirDate, vdDate);
  writeVolumeDescriptor(img, PVD_SECTOR + 1, "joliet", volumeId, totalSectors, PATH_TABLE_SECTOR + 2, jolietRoot, dirDate, vdDate);
  // §8.3: type 255 ends the descriptor set.
  const term = (PVD_SECTOR + 2) * SECTOR_SIZE;
  img[term] = 255;
  img.set(ascii("CD001"), term + 1);
  img[term + 6] = 1;

  writePathTables(img, PATH_TABLE_SECTOR, primaryDirSector);
  writePathTables(img, PATH_TABLE_SECTOR + 2, jolietDirSector);

  writeDirectory(img, primaryRoot, primaryOrder.map((e) => ({ id: e.primaryId, e })), dirDate);
  writeDirectory(img, jolietRoot, jolietOrder.map((e) => ({ id: e.jolietId, e })), dirDate);

  for (const e of entries) if (e.data.length > 0) img.set(e.data, e.extent * SECTOR_SIZE);
  return img;
}

/**
 * Level-1 style name for the primary tree (§7.5, §10.1): up to 8 d-characters, ".",
 * up to 3, ";1". Only readers without Joliet support see it; collisions get a numeric tail.
 */
function primaryIdentifier(name: string, taken: ReadonlySet<string>): string {
  const dot = name.lastIndexOf(".");
  const clean = (s: string): string => s.toUpperCase().replace(/[^A-Z0-9_]/g, "_");
  const base = clean(dot > 0 ? name.slice(0, dot) : name).slice(0, 8);
  const ext = dot > 0 ? clean(name.slice(dot + 1)).slice(0, 3) : "";
  let id = `${base}.${ext};1`;
  for (let n = 1; taken.has(id); n++) {
    const tail = String(n);
    id = `${base.slice(0, 8 - tail.length)}${tail}.${ext};1`;
  }
  return id;
}

/** Bytes of a directory extent: records never straddle a sector boundary (§6.8.1.1). */
function directorySize(idLengths: readonly number[]): number {
  let off = 0;
  for (const len of [1, 1, ...idLengths]) {
    const rec = recordLength(len);
    if ((off % SECTOR_SIZE) + rec > SECTOR_SIZE) off = roundUp(off);
    off += rec;
  }
  return roundUp(off);
}

/** §9.1: 33 fixed bytes + identifier, padded to an even length (§9.1.12). */
function recordLength(idLen: number): number {
  return 33 + idLen + (idLen % 2 === 0 ? 1 : 0);
}

function writeDirectory(
  img: Uint8Array,
  dir: { sector: number; size: number },
  children: readonly { id: Uint8Array; e: Entry }[],
  date: Uint8Array,
): void {
  const start = dir.sector * SECTOR_SIZE;
  let off = 0;
  const put = (id: Uint8Array, extent: number, size: number, flags: number): void => {
    const rec = recordLength(id.length);
    if ((off % SECTOR_SIZE) + rec > SECTOR_SIZE) off = roundUp(off);
    writeDirRecord(img, start + off, id, extent, size, flags, date);
    off += rec;
  };
  // §6.8.2.2: the first two records are "." (0x00) and ".." (0x01); the root is its own parent.
  put(new Uint8Array([0]), dir.sector, dir.size, 2);
  put(new Uint8Array([1]), dir.sector, dir.size, 2);
  for (const c of children) put(c.id, c.e.extent, c.e.data.length, 0);
}

function writeDirRecord(img: Uint8Array, off: number, id: Uint8Array, extent: number, size: number, flags: number, date: Uint8Array): void {
  img[off] = recordLength(id.length); // §9.1.1
  img[off + 1] = 0; // §9.1.2 no extended attribute record
  both32(img, off + 2, extent); // §9.1.3
  both32(img, off + 10, size); // §9.1.4
  img.set(date, off + 18); // §9.1.5
  img[off + 25] = flags; // §9.1.6, bit 1 = directory
  // §9.1.7/9.1.8: file unit size and interleave gap 0 (not interleaved)
  both16(img, off + 28, 1); // §9.1.9 volume sequence number
  img[off + 32] = id.length; // §9.1.10
  img.set(id, off + 33); // §9.1.11
}

/** One-entry path tables (§9.4): the root, its own parent (directory number 1). */
function writePathTables(img: Uint8Array, lSector: number, rootSector: number): void {
  const dv = new DataView(img.buffer, img.byteOffset, img.byteLength);
  for (const [sector, le] of [[lSector, true], [lSector + 1, false]] as const) {
    const off = sector * SECTOR_SIZE;
    img[off] = 1; // length of directory identifier
    dv.setUint32(off + 2, rootSector, le); // §9.4.3: L table little-, M table big-endian
    dv.setUint16(off + 6, 1, le); // §9.4.4 parent directory number
    img[off + 8] = 0; // root identifier
  }
}

function writeVolumeDescriptor(
  img: Uint8Array,
  sector: number,
  kind: "primary" | "joliet",
  volumeId: string,
  totalSectors: number,
  pathTableSector: number,
  root: { sector: number; size: number },
  dirDate: Uint8Array,
  vdDate: Uint8Array,
): void {
  const joliet = kind === "joliet";
  const off = sector * SECTOR_SIZE;
  const dv = new DataView(img.buffer, img.byteOffset, img.byteLength);
  // Identifier fields: a-/d-characters padded with spaces in the PVD (§8.4.5/§8.4.6);
  // UCS-2 big-endian padded with U+0020 in Joliet.
  const text = (at: number, len: number, s: string): void => {
    if (joliet) {
      for (let i = 0; i + 1 < len; i += 2) dv.setUint16(off + at + i, i / 2 < s.length ? s.charCodeAt(i / 2) : 0x20);
    } else {
      for (let i = 0; i < len; i++) img[off + at + i] = i < s.length ? s.charCodeAt(i) : 0x20;
    }
  };
  img[off] = joliet ? 2 : 1; // §8.4.1 / §8.5.1 descriptor type
  img.set(ascii("CD001"), off + 1);
  img[off + 6] = 1; // §8.4.3 version
  text(8, 32, ""); // §8.4.5 system identifier
  // The 32-byte field holds 16 UCS-2 characters, so Joliet truncates long ids; Linux's
  // blkid merges the two labels, keeping the Joliet case and the PVD's full length.
  text(40, 32, joliet ? volumeId.slice(0, 16) : volumeId.toUpperCase()); // §8.4.6
  both32(img, off + 80, totalSectors); // §8.4.8 volume space size
  // §8.5.6 escape sequences; "%/E" announces UCS-2 Level 3, which makes it Joliet.
  if (joliet) img.set(ascii("%/E"), off + 88);
  both16(img, off + 120, 1); // §8.4.10 volume set size
  both16(img, off + 124, 1); // §8.4.11 volume sequence number
  both16(img, off + 128, SECTOR_SIZE); // §8.4.12 logical block size
  both32(img, off + 132, ROOT_PATH_TABLE_SIZE); // §8.4.13
  dv.setUint32(off + 140, pathTableSector, true); // §8.4.14 type L path table
  dv.setUint32(off + 148, pathTableSector + 1, false); // §8.4.16 type M path table
  // Optional path table copies (§8.4.15, §8.4.17) stay 0 = absent.
  writeDirRecord(img, off + 156, new Uint8Array([0]), root.sector, root.size, 2, dirDate); // §8.4.18
  text(190, 128, ""); // §8.4.19 volume set identifier
  text(318, 128, ""); // §8.4.20 publisher
  text(446, 128, ""); // §8.4.21 data preparer
  text(574, 128, "RCLOUD"); // §8.4.22 application
  // §8.4.23-25 copyright/abstract/bibliographic file identifiers: none.
  text(702, 37, "");
  text(739, 37, "");
  text(776, 37, "");
  img.set(vdDate, off + 813); // §8.4.26 creation
  img.set(vdDate, off + 830); // §8.4.27 modification
  // §8.4.28/29 expiration and effective dates "not specified": 16 '0' digits, offset 0.
  img.set(ascii("0".repeat(16)), off + 847);
  img.set(ascii("0".repeat(16)), off + 864);
  img[off + 881] = 1; // §8.4.31 file structure version
}

/** §9.1.5: years since 1900, month, day, hour, minute, second, GMT offset (UTC here). */
function directoryDate(d: Date): Uint8Array {
  return new Uint8Array([d.getUTCFullYear() - 1900, d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), 0]);
}

/** §8.4.26.1: "YYYYMMDDHHMMSScc" digits then a GMT offset byte (0 = UTC). */
function descriptorDate(d: Date): Uint8Array {
  const p = (n: number, w: number): string => String(n).padStart(w, "0");
  const s =
    p(d.getUTCFullYear(), 4) +
    p(d.getUTCMonth() + 1, 2) +
    p(d.getUTCDate(), 2) +
    p(d.getUTCHours(), 2) +
    p(d.getUTCMinutes(), 2) +
    p(d.getUTCSeconds(), 2) +
    p(Math.floor(d.getUTCMilliseconds() / 10), 2);
  const out = new Uint8Array(17);
  out.set(ascii(s));
  return out;
}

/** §7.2.3: 16-bit value recorded little-endian then big-endian. */
function both16(img: Uint8Array, off: number, v: number): void {
  const dv = new DataView(img.buffer, img.byteOffset, img.byteLength);
  dv.setUint16(off, v, true);
  dv.setUint16(off + 2, v, false);
}

/** §7.3.3: 32-bit value recorded little-endian then big-endian. */
function both32(img: Uint8Array, off: number, v: number): void {
  const dv = new DataView(img.buffer, img.byteOffset, img.byteLength);
  dv.setUint32(off, v, true);
  dv.setUint32(off + 4, v, false);
}

function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function ucs2(s: string): Uint8Array {
  const out = new Uint8Array(s.length * 2);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < s.length; i++) dv.setUint16(i * 2, s.charCodeAt(i), false);
  return out;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function roundUp(n: number): number {
  return Math.ceil(n / SECTOR_SIZE) * SECTOR_SIZE;
}
