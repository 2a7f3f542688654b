//! The export file: a magic line, then checksummed records, last a trailer that counts them and
//! checksums every byte before it.
//!
//! Each record is `kind (1 byte) | length (u32 LE) | payload | CRC32C of the three (u32 LE)`:
//! a flipped byte anywhere fails its record's checksum, a file cut short has no trailer, and
//! records dropped or reordered fail the trailer's checksum over the whole file. Lengths are
//! capped, so a damaged length cannot make a reader allocate gigabytes.
//!
//! Order: header, catalog, one section per database (start, entries, end), one section per
//! blob (start, data, end), trailer. A section's end says whether it is complete or abandoned
//! (a blob deleted, or a database snapshot reclaimed, while it was being read): an importer
//! skips abandoned sections, which lets an export write as it reads, without buffering.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blob::{BlobKey, Shape};
use crate::ordered::Sublevel;

/// The first bytes of every export file (PNG-style: text-mode mangling shows).
pub const MAGIC: &[u8; 12] = b"ZMM-EXPORT\r\n";
/// The format this release writes and reads.
pub const FORMAT: u32 = 1;
/// Largest record payload: a metadata value (64 MiB at most) with its key, and room.
const MAX_RECORD: u32 = 80 << 20;
/// Entries and blob data are cut into records of about this many bytes.
pub const RECORD_TARGET: usize = 1 << 20;

/// What the file was taken from, and when: the first record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// When the export started, RFC 3339 UTC, and the same in Unix seconds.
    pub taken_at: String,
    pub taken_at_unix: u64,
    /// The program and version that wrote it.
    pub tool: String,
    pub source: Source,
    /// The deployment id (`getUUID`), if the store had one.
    pub deployment_id: Option<String>,
}

/// The store an export was taken from: its servers and replication factor as recorded in its
/// placement (the `--memcached` list when it had no record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub servers: Vec<String>,
    pub replication_factor: u32,
    /// Whether the store held a placement record (stores of earlier releases have none).
    pub placement_recorded: bool,
}

/// Counts of what the file holds, in the trailer; a reader checks them against what it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub databases: u64,
    pub keys: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Sections abandoned (blobs deleted while the export read them, database snapshots
    /// read again).
    pub abandoned: u64,
    /// Records before the trailer.
    pub records: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Trailer {
    totals: Totals,
    /// CRC32C of every byte of the file before the trailer record.
    file_crc32c: u32,
}

/// The head of one blob's section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHead {
    pub key: BlobKey,
    pub shape: Shape,
    pub size: u64,
}

/// How a section ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Complete,
    /// Left out: what it held so far is to be ignored.
    Abandoned,
}

/// One record of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Header(Header),
    /// The databases the store listed when the export started.
    Catalog(Vec<Sublevel>),
    DatabaseStart(Sublevel),
    /// Keys and values of the current database, in key order.
    Entries(Vec<(String, String)>),
    DatabaseEnd(Ended),
    BlobStart(BlobHead),
    /// The next bytes of the current blob.
    BlobData(Bytes),
    BlobEnd(Ended),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Header = 1,
    Catalog = 2,
    DatabaseStart = 3,
    Entries = 4,
    DatabaseEnd = 5,
    BlobStart = 6,
    BlobData = 7,
    BlobEnd = 8,
    Trailer = 9,
}

impl Kind {
    fn of(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Header,
            2 => Kind::Catalog,
            3 => Kind::DatabaseStart,
            4 => Kind::Entries,
            5 => Kind::DatabaseEnd,
            6 => Kind::BlobStart,
            7 => Kind::BlobData,
            8 => Kind::BlobEnd,
            9 => Kind::Trailer,
            _ => return None,
        })
    }
}

/// What is wrong with a file, said so that a person knows which file and where.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("not an export of zenko-memcached-sidecar (it does not start with the export magic)")]
    NotAnExport,
    #[error("it is cut short: it ends at byte {offset}, inside {what}, before its trailer")]
    CutShort { offset: u64, what: &'static str },
    #[error("record {record} (at byte {offset}) fails its checksum: the file is damaged there")]
    Checksum { record: u64, offset: u64 },
    #[error("record {record} (at byte {offset}) is malformed: {what}")]
    Malformed {
        record: u64,
        offset: u64,
        what: String,
    },
    #[error("it is of export format {found}; this sidecar reads format {FORMAT}")]
    Format { found: u32 },
    #[error("its trailer does not match its contents: {0}")]
    Trailer(String),
    #[error("bytes follow its trailer at byte {offset}")]
    TrailingBytes { offset: u64 },
}

/// Writes records to `out`, keeping the running checksum and counts for the trailer.
pub struct Writer<W: Write> {
    out: W,
    crc: u32,
    bytes: u64,
    totals: Totals,
    /// Keys written in the current database section, or the size of the current blob: what
    /// an abandoned section takes back out of the totals.
    section: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W) -> io::Result<Writer<W>> {
        out.write_all(MAGIC)?;
        Ok(Writer {
            out,
            crc: crc32c::crc32c(MAGIC),
            bytes: MAGIC.len() as u64,
            totals: Totals::default(),
            section: 0,
        })
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let totals = &mut self.totals;
        match record {
            Record::DatabaseStart(_) => {
                totals.databases += 1;
                self.section = 0;
            }
            Record::Entries(entries) => {
                totals.keys += entries.len() as u64;
                self.section += entries.len() as u64;
            }
            Record::DatabaseEnd(Ended::Abandoned) => {
                totals.abandoned += 1;
                totals.databases -= 1;
                totals.keys -= self.section;
            }
            Record::BlobStart(head) => {
                totals.blobs += 1;
                totals.blob_bytes += head.size;
                self.section = head.size;
            }
            Record::BlobEnd(Ended::Abandoned) => {
                totals.abandoned += 1;
                totals.blobs -= 1;
                totals.blob_bytes -= self.section;
            }
            _ => {}
        }
        let (kind, payload) = encode(record)?;
        self.frame(kind, &payload)?;
        self.totals.records += 1;
        Ok(())
    }

    /// Write the trailer; what the file holds.
    pub fn finish(mut self) -> io::Result<(W, Totals)> {
        let trailer = Trailer {
            totals: self.totals,
            file_crc32c: self.crc,
        };
        self.frame(Kind::Trailer, &json(&trailer)?)?;
        self.out.flush()?;
        Ok((self.out, self.totals))
    }

    fn frame(&mut self, kind: Kind, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_RECORD)
            .ok_or_else(|| io::Error::other(format!("a record of {} bytes", payload.len())))?;
        let mut head = [0u8; 5];
        head[0] = kind as u8;
        head[1..].copy_from_slice(&len.to_le_bytes());
        let seal = crc32c::crc32c_append(crc32c::crc32c(&head), payload);
        for part in [&head[..], payload, &seal.to_le_bytes()] {
            self.out.write_all(part)?;
            self.crc = crc32c::crc32c_append(self.crc, part);
            self.bytes += part.len() as u64;
        }
        Ok(())
    }
}

fn json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn encode(record: &Record) -> io::Result<(Kind, Vec<u8>)> {
    Ok(match record {
        Record::Header(header) => (Kind::Header, json(header)?),
        Record::Catalog(databases) => (
            Kind::Catalog,
            json(&databases.iter().map(Sublevel::path).collect::<Vec<_>>())?,
        ),
        Record::DatabaseStart(sublevel) => (Kind::DatabaseStart, json(&sublevel.path())?),
        Record::Entries(entries) => {
            let mut payload = Vec::new();
            for (key, value) in entries {
                for text in [key, value] {
                    let len = u32::try_from(text.len())
                        .map_err(|_| io::Error::other("a metadata value over 4 GiB"))?;
                    payload.extend_from_slice(&len.to_le_bytes());
                    payload.extend_from_slice(text.as_bytes());
                }
            }
            (Kind::Entries, payload)
        }
        Record::DatabaseEnd(ended) => (Kind::DatabaseEnd, vec![ended_byte(*ended)]),
        Record::BlobStart(head) => {
            let mut payload = head.key.to_string().into_bytes();
            let (shape, chunk_size) = match head.shape {
                Shape::Inline => (0u8, 0u64),
                Shape::Chunked { chunk_size } => (1, chunk_size),
            };
            payload.push(shape);
            payload.extend_from_slice(&chunk_size.to_le_bytes());
            payload.extend_from_slice(&head.size.to_le_bytes());
            (Kind::BlobStart, payload)
        }
        Record::BlobData(bytes) => (Kind::BlobData, bytes.to_vec()),
        Record::BlobEnd(ended) => (Kind::BlobEnd, vec![ended_byte(*ended)]),
    })
}

fn ended_byte(ended: Ended) -> u8 {
    match ended {
        Ended::Complete => 0,
        Ended::Abandoned => 1,
    }
}

/// Reads records back, checking each one's checksum, and at the end the trailer.
pub struct Reader<R: Read> {
    input: R,
    offset: u64,
    crc: u32,
    records: u64,
    totals: Totals,
    finished: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R) -> Result<Reader<R>, FileError> {
        let mut magic = [0u8; MAGIC.len()];
        match read_full(&mut input, &mut magic)? {
            n if n == MAGIC.len() && &magic == MAGIC => {}
            _ => return Err(FileError::NotAnExport),
        }
        Ok(Reader {
            input,
            offset: MAGIC.len() as u64,
            crc: crc32c::crc32c(MAGIC),
            records: 0,
            totals: Totals::default(),
            finished: false,
        })
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record; `None` after the trailer, once it is checked against the file.
    pub fn read(&mut self) -> Result<Option<Record>, FileError> {
        if self.finished {
            return Ok(None);
        }
        let at = self.offset;
        let record = self.records + 1;
        let mut head = [0u8; 5];
        let got = read_full(&mut self.input, &mut head)?;
        if got < head.len() {
            return Err(FileError::CutShort {
                offset: at + got as u64,
                what: "a record header",
            });
        }
        let malformed = |what: String| FileError::Malformed {
            record,
            offset: at,
            what,
        };
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let kind = Kind::of(head[0]);
        if kind.is_none() || len > MAX_RECORD {
            // A damaged header byte: the checksum cannot be found, so say what it would be.
            return Err(FileError::Checksum { record, offset: at });
        }
        let mut payload = Vec::new();
        let got = (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut payload)?;
        let mut seal = [0u8; 4];
        let sealed = read_full(&mut self.input, &mut seal)?;
        if got < len as usize || sealed < seal.len() {
            return Err(FileError::CutShort {
                offset: at + 5 + got as u64 + sealed as u64,
                what: "a record",
            });
        }
        if crc32c::crc32c_append(crc32c::crc32c(&head), &payload) != u32::from_le_bytes(seal) {
            return Err(FileError::Checksum { record, offset: at });
        }
        let file_crc = self.crc;
        for part in [&head[..], &payload, &seal] {
            self.crc = crc32c::crc32c_append(self.crc, part);
        }
        self.offset += 9 + u64::from(len);
        let Some(kind) = kind else {
            unreachable!("checked above")
        };
        if kind == Kind::Trailer {
            let trailer: Trailer = serde_json::from_slice(&payload)
                .map_err(|error| malformed(format!("an unreadable trailer: {error}")))?;
            if trailer.file_crc32c != file_crc {
                return Err(FileError::Trailer(
                    "the checksum over the whole file differs (records missing or out of order)"
                        .into(),
                ));
            }
            if trailer.totals.records != self.records {
                return Err(FileError::Trailer(format!(
                    "{} records counted, {} read",
                    trailer.totals.records, self.records
                )));
            }
            let mut extra = [0u8; 1];
            if read_full(&mut self.input, &mut extra)? > 0 {
                return Err(FileError::TrailingBytes {
                    offset: self.offset,
                });
            }
            self.totals = trailer.totals;
            self.finished = true;
            return Ok(None);
        }
        self.records += 1;
        decode(kind, payload).map(Some).map_err(malformed)
    }

    /// The trailer's counts, once [`Reader::read`] has returned `None`.
    pub fn totals(&self) -> Totals {
        self.totals
    }
}

/// What a verified file holds.
#[derive(Clone, Debug)]
pub struct Contents {
    pub header: Header,
    pub catalog: Vec<Sublevel>,
    pub totals: Totals,
    /// Sections (numbered from 0 in file order, databases and blobs alike) to skip.
    pub abandoned: HashSet<u64>,
}

/// Where a reader is in the structure of the file.
enum Place {
    Start,
    AfterHeader,
    Between,
    Database { last_key: Option<String> },
    Blob { size: u64, read: u64 },
}

/// Read the whole file, checking every checksum and its structure (header, then catalog, then
/// whole sections, each blob's bytes adding up to its size, keys in order, the trailer's
/// counts); `progress` is told the bytes read so far after each record.
pub fn verify<R: Read>(input: R, mut progress: impl FnMut(u64)) -> Result<Contents, FileError> {
    let mut reader = Reader::new(input)?;
    let mut place = Place::Start;
    let (mut header, mut catalog) = (None, Vec::new());
    let mut counted = Totals::default();
    let (mut section, mut section_keys) = (0u64, 0u64);
    let mut abandoned = HashSet::new();
    loop {
        let (record_number, offset) = (reader.records + 1, reader.offset);
        let malformed = |what: &str| FileError::Malformed {
            record: record_number,
            offset,
            what: what.to_owned(),
        };
        let Some(record) = reader.read()? else {
            break;
        };
        progress(reader.offset);
        place = match (place, record) {
            (Place::Start, Record::Header(found)) => {
                if found.format != FORMAT {
                    return Err(FileError::Format {
                        found: found.format,
                    });
                }
                header = Some(found);
                Place::AfterHeader
            }
            (Place::Start, _) => return Err(malformed("the file does not start with a header")),
            (Place::AfterHeader, Record::Catalog(databases)) => {
                catalog = databases;
                Place::Between
            }
            (Place::AfterHeader, _) => return Err(malformed("a catalog must follow the header")),
            (Place::Between, Record::DatabaseStart(_)) => {
                section_keys = 0;
                Place::Database { last_key: None }
            }
            (Place::Between, Record::BlobStart(head)) => Place::Blob {
                size: head.size,
                read: 0,
            },
            (Place::Database { mut last_key }, Record::Entries(entries)) => {
                for (key, _) in entries {
                    if last_key.as_ref().is_some_and(|last| *last >= key) {
                        return Err(malformed("keys out of order"));
                    }
                    last_key = Some(key);
                    section_keys += 1;
                }
                Place::Database { last_key }
            }
            (Place::Database { .. }, Record::DatabaseEnd(ended)) => {
                match ended {
                    Ended::Complete => {
                        counted.databases += 1;
                        counted.keys += section_keys;
                    }
                    Ended::Abandoned => {
                        counted.abandoned += 1;
                        abandoned.insert(section);
                    }
                }
                section += 1;
                Place::Between
            }
            (Place::Blob { size, read }, Record::BlobData(bytes)) => {
                let read = read + bytes.len() as u64;
                if read > size {
                    return Err(malformed("more bytes than the blob's size"));
                }
                Place::Blob { size, read }
            }
            (Place::Blob { size, read }, Record::BlobEnd(ended)) => {
                match ended {
                    Ended::Complete if read != size => {
                        return Err(malformed("a blob with fewer bytes than its size"));
                    }
                    Ended::Complete => {
                        counted.blobs += 1;
                        counted.blob_bytes += size;
                    }
                    Ended::Abandoned => {
                        counted.abandoned += 1;
                        abandoned.insert(section);
                    }
                }
                section += 1;
                Place::Between
            }
            (Place::Database { .. } | Place::Blob { .. }, _) => {
                return Err(malformed(
                    "a section interrupted by a record of another kind",
                ));
            }
            (Place::Between, _) => return Err(malformed("a record outside any section")),
        };
    }
    let (Place::Between, Some(header)) = (place, header) else {
        return Err(FileError::Trailer(
            "it ends before its header, catalog or last section is complete".into(),
        ));
    };
    let totals = reader.totals();
    counted.records = totals.records;
    if counted != totals {
        return Err(FileError::Trailer(format!(
            "it counts {totals:?}, the records hold {counted:?}"
        )));
    }
    Ok(Contents {
        header,
        catalog,
        totals,
        abandoned,
    })
}

/// Read until `buf` is full or the input ends; how many bytes were read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn from_json<'a, T: Deserialize<'a>>(payload: &'a [u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|error| format!("an unreadable {what}: {error}"))
}

fn decode(kind: Kind, payload: Vec<u8>) -> Result<Record, String> {
    Ok(match kind {
        Kind::Header => Record::Header(from_json(&payload, "header")?),
        Kind::Catalog => Record::Catalog(
            from_json::<Vec<Vec<String>>>(&payload, "catalog")?
                .into_iter()
                .map(Sublevel::new)
                .collect(),
        ),
        Kind::DatabaseStart => {
            Record::DatabaseStart(Sublevel::new(from_json(&payload, "database name")?))
        }
        Kind::Entries => Record::Entries(decode_entries(&payload)?),
        Kind::DatabaseEnd => Record::DatabaseEnd(decode_ended(&payload)?),
        Kind::BlobStart => Record::BlobStart(decode_blob_head(&payload)?),
        Kind::BlobData => Record::BlobData(Bytes::from(payload)),
        Kind::BlobEnd => Record::BlobEnd(decode_ended(&payload)?),
        Kind::Trailer => unreachable!("the trailer is read by Reader::read"),
    })
}

fn decode_entries(mut payload: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = |payload: &mut &[u8]| -> Result<String, String> {
        let (len, rest) = payload
            .split_first_chunk::<4>()
            .ok_or("an entry cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        let bytes = rest.get(..len).ok_or("an entry longer than its record")?;
        *payload = &rest[len..];
        String::from_utf8(bytes.to_vec()).map_err(|_| "a key or value that is not UTF-8".into())
    };
    let mut entries = Vec::new();
    while !payload.is_empty() {
        let key = text(&mut payload)?;
        let value = text(&mut payload)?;
        entries.push((key, value));
    }
    Ok(entries)
}

fn decode_ended(payload: &[u8]) -> Result<Ended, String> {
    match payload {
        [0] => Ok(Ended::Complete),
        [1] => Ok(Ended::Abandoned),
        _ => Err("an unknown section end".into()),
    }
}

fn decode_blob_head(payload: &[u8]) -> Result<BlobHead, String> {
    if payload.len() != 40 + 1 + 8 + 8 {
        return Err(format!("a blob head of {} bytes", payload.len()));
    }
    let key = std::str::from_utf8(&payload[..40])
        .ok()
        .and_then(|text| text.parse::<BlobKey>().ok())
        .ok_or("a blob key that is not 40 lowercase hex characters")?;
    let number = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&payload[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let chunk_size = number(41);
    let shape = match payload[40] {
        0 => Shape::Inline,
        1 if chunk_size > 0 => Shape::Chunked { chunk_size },
        _ => return Err("a blob of an unknown shape".into()),
    };
    Ok(BlobHead {
        key,
        shape,
        size: number(49),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Header(Header {
                format: FORMAT,
                taken_at: "2026-12-07T10:00:00Z".into(),
                taken_at_unix: 1_796_637_600,
                tool: "test".into(),
                source: Source {
                    servers: vec!["a:1".into()],
                    replication_factor: 1,
                    placement_recorded: true,
                },
                deployment_id: Some("id".into()),
            }),
            Record::Catalog(vec![Sublevel::new(vec!["b".into()])]),
            Record::DatabaseStart(Sublevel::new(vec!["b".into()])),
            Record::Entries(vec![("k".into(), "v".into()), ("é".into(), String::new())]),
            Record::DatabaseEnd(Ended::Complete),
            Record::BlobStart(BlobHead {
                key: BlobKey::random(crate::blob::Layout::Chunked),
                shape: Shape::Chunked { chunk_size: 4 },
                size: 6,
            }),
            Record::BlobData(Bytes::from_static(b"abcdef")),
            Record::BlobEnd(Ended::Complete),
        ]
    }

    fn file(records: &[Record]) -> Vec<u8> {
        let mut writer = Writer::new(Vec::new()).unwrap();
        for record in records {
            writer.write(record).unwrap();
        }
        writer.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>, FileError> {
        let mut reader = Reader::new(bytes)?;
        let mut records = Vec::new();
        while let Some(record) = reader.read()? {
            records.push(record);
        }
        Ok(records)
    }

    #[test]
    fn records_round_trip() {
        let records = sample();
        assert_eq!(read_all(&file(&records)).unwrap(), records);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let bytes = file(&sample());
        for len in 0..bytes.len() {
            assert!(read_all(&bytes[..len]).is_err(), "cut at {len}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(read_all(&damaged).is_err(), "flipped byte {at}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            read_all(&longer),
            Err(FileError::TrailingBytes { .. })
        ));
    }
}
