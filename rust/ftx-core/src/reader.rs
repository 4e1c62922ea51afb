//! Streaming input: files (plain, gzip or zstd) cut into raw records with their location.
//! Nothing here parses JSON beyond finding element boundaries, so a bad record costs only itself.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One input as the pipeline sees it. `path` is what is read; `origin` is the user's file (they
/// differ when a Parquet or CSV file was first converted to JSON lines).
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub origin: PathBuf,
    /// Added to every line number, so that converted tables report their own row numbers.
    pub line_offset: u64,
}

impl Input {
    pub fn plain(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Input {
            origin: path.clone(),
            path,
            line_offset: 0,
        }
    }
}

/// How `.txt` inputs become documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextUnit {
    #[default]
    Line,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// One line of a JSON-lines file; `unterminated` when it is the last line and has no newline.
    JsonLine { unterminated: bool },
    /// One element of a top-level JSON array; `unterminated` when the file ends inside it.
    JsonElement { unterminated: bool },
    /// Plain text for continued pretraining.
    Text,
    /// A record of `bytes` bytes, more than [`MAX_RECORD_BYTES`]: only its start is kept, for
    /// the reject's excerpt; the rest was skipped without being held in memory.
    Oversized { bytes: u64 },
}

/// The largest record ftx reads (32 MiB, millions of tokens: beyond any training context). A
/// larger one is rejected as `too_long` while it streams past, so that one huge line (or a
/// small gzip that inflates to one) cannot exhaust memory.
pub const MAX_RECORD_BYTES: usize = 32 << 20;
/// What an oversized record keeps of its start, for the reject's excerpt.
const EXCERPT_BYTES: usize = 4096;

/// The bytes of one record and where they came from (1-based line, 0-based byte offset into the
/// decompressed stream).
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub source: u32,
    pub line: u64,
    pub offset: u64,
    pub kind: RawKind,
    pub bytes: Vec<u8>,
}

/// Opens a file, decompressing gzip or zstd when its first bytes say so (not its name: a
/// mislabelled file still reads).
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = fs_err::File::open(path)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader.fill_buf().map_err(|e| Error::io(path, e))?;
    let inner: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = ruzstd::decoding::StreamingDecoder::new(reader).map_err(|e| {
            Error::Data(format!("{}: not a valid zstd stream: {e}", path.display()))
        })?;
        Box::new(dec)
    } else {
        return Ok(Box::new(reader));
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, inner)))
}

/// The file's name, lowercased, without a compression suffix: what says `.txt` or `.jsonl`.
fn plain_name(path: &Path) -> String {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .trim_end_matches(".zstd");
    name.to_string()
}

fn is_text_file(path: &Path) -> bool {
    plain_name(path).ends_with(".txt")
}

fn is_json_lines_file(path: &Path) -> bool {
    let name = plain_name(path);
    name.ends_with(".jsonl") || name.ends_with(".ndjson")
}

/// Refuses UTF-16 and consumes a UTF-8 byte-order mark at the start of a file; returns its
/// length. A UTF-8 byte-order mark is not part of the first record (as Python's utf-8-sig
/// reads it); byte offsets still count it.
fn skip_bom(reader: &mut dyn BufRead, input: &Input) -> Result<usize> {
    let head = reader.fill_buf().map_err(|e| Error::io(&input.path, e))?;
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(Error::Data(format!(
            "{}: UTF-16 text (it starts with a UTF-16 byte-order mark); ftx reads UTF-8: \
             convert it, e.g. iconv -f UTF-16 -t UTF-8",
            input.origin.display()
        )));
    }
    let bom = if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    reader.consume(bom);
    Ok(bom)
}

/// The first byte that is not white space (consuming the white space before it); `None` for a
/// file of nothing else. A JSON array and JSON lines are told apart by it.
fn first_non_space(reader: &mut dyn BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buf = reader.fill_buf()?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => return Ok(Some(buf[i])),
            None if buf.is_empty() => return Ok(None),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// Reads every record of one input and hands them to `emit` in file order. Stops early when
/// `emit` returns false (the consumer was cancelled).
pub fn read_input(
    input: &Input,
    source: u32,
    text_unit: TextUnit,
    emit: &mut dyn FnMut(RawRecord) -> bool,
) -> Result<()> {
    let mut reader = open(&input.path)?;
    let io_err = |e| Error::io(&input.path, e);
    let bom = skip_bom(&mut reader, input)? as u64;
    if is_text_file(&input.origin) {
        return read_text(&mut reader, input, source, bom, text_unit, emit).map_err(io_err);
    }
    // JSON Lines by name is JSON Lines whatever its first line holds (a line may be an array).
    if !is_json_lines_file(&input.origin) {
        match first_non_space(&mut reader).map_err(io_err)? {
            None => return Ok(()),
            Some(b'[') => return read_json_array(&mut reader, input, source, bom, emit),
            Some(_) => {}
        }
    }
    read_lines(&mut reader, input, source, bom, false, u64::MAX, emit)
        .map(drop)
        .map_err(io_err)
}

/// Whether an input can be read in byte ranges, one line a record: an uncompressed JSON-lines
/// file, or a text file read by line. A JSON array, a whole-file text or a compressed stream
/// is read by one shard whole.
pub fn splittable(input: &Input, text_unit: TextUnit) -> Result<bool> {
    if input.path != input.origin {
        // A converted table: its rows are numbered by the conversion.
        return Ok(false);
    }
    let mut file = BufReader::with_capacity(64 << 10, fs_err::File::open(&input.path)?);
    let io_err = |e| Error::io(&input.path, e);
    let head = file.fill_buf().map_err(io_err)?;
    if [
        &[0x1f, 0x8b][..],
        &[0x28, 0xb5, 0x2f, 0xfd],
        &[0xFF, 0xFE],
        &[0xFE, 0xFF],
    ]
    .iter()
    .any(|m| head.starts_with(m))
    {
        return Ok(false);
    }
    if is_text_file(&input.origin) {
        return Ok(text_unit == TextUnit::Line);
    }
    if is_json_lines_file(&input.origin) {
        return Ok(true);
    }
    skip_bom(&mut file, input)?;
    Ok(first_non_space(&mut file).map_err(io_err)? != Some(b'['))
}

/// Bytes `[start, end)` of a file and the lines in them, as one shard read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub lines: u64,
}

/// Reads the records of a [`splittable`] input that start in bytes `[start, end)`: a line that
/// begins before `start` belongs to the range before, one that begins before `end` is read
/// whole. Line numbers count from the region's first line (plus `line_offset`); the caller adds
/// the lines of the regions before it. Returns the region as read: consecutive ranges of one
/// file give regions that tile it.
pub fn read_range(
    input: &Input,
    source: u32,
    range: (u64, u64),
    emit: &mut dyn FnMut(RawRecord) -> bool,
) -> Result<Region> {
    let io_err = |e| Error::io(&input.path, e);
    let (start, end) = range;
    let mut file = fs_err::File::open(&input.path)?;
    let mut pos = start.saturating_sub(1);
    file.seek(SeekFrom::Start(pos)).map_err(io_err)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut first = pos;
    if start == 0 {
        pos = skip_bom(&mut reader, input)? as u64;
    } else {
        // The line the byte before `start` is in ends this shard's region's first line away.
        loop {
            let buf = reader.fill_buf().map_err(io_err)?;
            if buf.is_empty() {
                break;
            }
            let (take, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            reader.consume(take);
            pos += take as u64;
            if done {
                break;
            }
        }
        first = pos;
    }
    // The first line begins at byte 0 even when a byte-order mark comes before its text.
    let until = match start == 0 && end > 0 {
        true => end.max(pos + 1),
        false => end,
    };
    let text = is_text_file(&input.origin);
    let (last, stop) =
        read_lines(&mut reader, input, source, pos, text, until, emit).map_err(io_err)?;
    Ok(Region {
        start: first,
        end: stop.max(first),
        lines: last - input.line_offset,
    })
}

/// Reads one line (with its newline) into `bytes`, keeping at most [`MAX_RECORD_BYTES`] of it;
/// returns the bytes it consumed and whether the line was longer than that.
fn read_line_bounded(
    reader: &mut dyn BufRead,
    bytes: &mut Vec<u8>,
) -> std::io::Result<(u64, bool)> {
    let (mut consumed, mut over) = (0u64, false);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((consumed, over));
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = MAX_RECORD_BYTES.saturating_sub(bytes.len());
        over |= take > room;
        bytes.extend_from_slice(&buf[..take.min(room)]);
        reader.consume(take);
        consumed += take as u64;
        if done {
            return Ok((consumed, over));
        }
    }
}

/// One record per line: JSON lines, or text lines when `text`; lines that start at `until` or
/// later are left unread. Returns the last line number and the offset it stopped at.
fn read_lines(
    reader: &mut dyn BufRead,
    input: &Input,
    source: u32,
    start: u64,
    text: bool,
    until: u64,
    emit: &mut dyn FnMut(RawRecord) -> bool,
) -> std::io::Result<(u64, u64)> {
    let mut line_no = input.line_offset;
    let mut offset = start;
    loop {
        if offset >= until {
            return Ok((line_no, offset));
        }
        let mut bytes = Vec::new();
        let (n, over) = read_line_bounded(reader, &mut bytes)?;
        if n == 0 {
            return Ok((line_no, offset));
        }
        line_no += 1;
        let begin = offset;
        offset += n;
        let unterminated = bytes.last() != Some(&b'\n');
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if !over && bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let kind = if over {
            bytes.truncate(EXCERPT_BYTES);
            RawKind::Oversized { bytes: n }
        } else if text {
            RawKind::Text
        } else {
            RawKind::JsonLine { unterminated }
        };
        let raw = RawRecord {
            source,
            line: line_no,
            offset: begin,
            kind,
            bytes,
        };
        if !emit(raw) {
            return Ok((line_no, offset));
        }
    }
}

/// Splits a top-level JSON array into its elements without parsing them, tracking strings and
/// nesting, so that one bad element is one reject and memory stays at one element. Anything
/// but whitespace after the array's end is an error: those records would otherwise be lost.
fn read_json_array(
    reader: &mut dyn BufRead,
    input: &Input,
    source: u32,
    start: u64,
    emit: &mut dyn FnMut(RawRecord) -> bool,
) -> Result<()> {
    let mut line = input.line_offset + 1;
    let mut offset = start;
    let mut closed = false;
    let mut depth = 0usize; // nesting inside the current element
    let mut in_string = false;
    let mut escaped = false;
    let mut seen_open = false;
    let mut element: Vec<u8> = Vec::new();
    let mut elem_bytes = 0u64; // what `element` holds of it, or more when it is oversized
    let mut elem_line = line;
    let mut elem_offset = 0u64;
    loop {
        let buf = reader.fill_buf().map_err(|e| Error::io(&input.path, e))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for &b in buf {
            let pos = offset;
            offset += 1;
            if closed {
                if b.is_ascii_whitespace() {
                    if b == b'\n' {
                        line += 1;
                    }
                    continue;
                }
                return Err(Error::Data(format!(
                    "{}:{line}: data after the end of the top-level JSON array (byte {pos}); a \
                     .json file holds one array or one value per line: name a JSON Lines file \
                     .jsonl",
                    input.origin.display()
                )));
            }
            if b == b'\n' {
                line += 1;
            }
            if !seen_open {
                if b == b'[' {
                    seen_open = true;
                }
                continue;
            }
            if in_string {
                keep(&mut element, &mut elem_bytes, b);
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b',' | b']' if depth == 0 => {
                    if !element.iter().all(u8::is_ascii_whitespace) {
                        let raw = RawRecord {
                            source,
                            line: elem_line,
                            offset: elem_offset,
                            kind: element_kind(elem_bytes, false),
                            bytes: excerpt(trim(std::mem::take(&mut element)), elem_bytes),
                        };
                        if !emit(raw) {
                            return Ok(());
                        }
                    }
                    element.clear();
                    elem_bytes = 0;
                    if b == b']' {
                        closed = true;
                    }
                }
                _ => {
                    if element.iter().all(u8::is_ascii_whitespace) && !b.is_ascii_whitespace() {
                        element.clear();
                        elem_bytes = 0;
                        elem_line = line;
                        elem_offset = pos;
                    }
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                    keep(&mut element, &mut elem_bytes, b);
                }
            }
        }
        reader.consume(n);
    }
    // The file ended inside the array: what is left is a truncated element.
    if !element.iter().all(u8::is_ascii_whitespace) {
        emit(RawRecord {
            source,
            line: elem_line,
            offset: elem_offset,
            kind: element_kind(elem_bytes, true),
            bytes: excerpt(trim(element), elem_bytes),
        });
    }
    Ok(())
}

/// Appends one byte of an array element, holding at most [`MAX_RECORD_BYTES`] of it.
fn keep(element: &mut Vec<u8>, total: &mut u64, b: u8) {
    *total += 1;
    if element.len() < MAX_RECORD_BYTES {
        element.push(b);
    }
}

fn element_kind(total: u64, unterminated: bool) -> RawKind {
    if total > MAX_RECORD_BYTES as u64 {
        RawKind::Oversized { bytes: total }
    } else {
        RawKind::JsonElement { unterminated }
    }
}

fn excerpt(mut bytes: Vec<u8>, total: u64) -> Vec<u8> {
    if total > MAX_RECORD_BYTES as u64 {
        bytes.truncate(EXCERPT_BYTES);
    }
    bytes
}

fn trim(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(u8::is_ascii_whitespace) {
        v.pop();
    }
    v
}

fn read_text(
    reader: &mut dyn BufRead,
    input: &Input,
    source: u32,
    start: u64,
    unit: TextUnit,
    emit: &mut dyn FnMut(RawRecord) -> bool,
) -> std::io::Result<()> {
    if unit == TextUnit::Line {
        return read_lines(reader, input, source, start, true, u64::MAX, emit).map(drop);
    }
    let mut bytes = Vec::new();
    reader
        .take(MAX_RECORD_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    let kind = if bytes.len() > MAX_RECORD_BYTES {
        let rest = std::io::copy(reader, &mut std::io::sink())?;
        bytes.truncate(EXCERPT_BYTES);
        RawKind::Oversized {
            bytes: MAX_RECORD_BYTES as u64 + 1 + rest,
        }
    } else if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    } else {
        RawKind::Text
    };
    emit(RawRecord {
        source,
        line: input.line_offset + 1,
        offset: start,
        kind,
        bytes,
    });
    Ok(())
}

/// Expands globs and checks that every named input exists, in the order given (the order is part
/// of the output: records are numbered across files in this order).
pub fn expand(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in patterns {
        if p.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(p)
                .map_err(|e| Error::Config(format!("bad glob pattern {p:?}: {e}")))?
                .filter_map(|r| r.ok())
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Err(Error::Config(format!("no file matches {p:?}")));
            }
            matched.sort();
            out.extend(matched);
        } else {
            let path = PathBuf::from(p);
            if !path.is_file() {
                return Err(Error::io(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such input file"),
                ));
            }
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(path: &Path, unit: TextUnit) -> Vec<RawRecord> {
        let mut v = Vec::new();
        read_input(&Input::plain(path), 0, unit, &mut |r| {
            v.push(r);
            true
        })
        .unwrap();
        v
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        fs_err::write(&p, bytes).unwrap();
        p
    }

    /// Every cut of a file into byte ranges reads the records of the whole file once each, with
    /// the same lines and offsets once the lines of the regions before are added.
    #[test]
    fn ranges_tile_the_file_and_read_each_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"\xEF\xBB\xBF{\"a\":1}\r\n\n{\"b\":22}\n   \n{\"c\":333}\n{\"d\":4444}";
        let p = write(&dir, "x.jsonl", body);
        let whole: Vec<(u64, u64, Vec<u8>)> = collect(&p, TextUnit::Line)
            .into_iter()
            .map(|r| (r.line, r.offset, r.bytes))
            .collect();
        assert_eq!(whole.len(), 4);
        let n = body.len() as u64;
        for a in 0..=n {
            for b in a..=n {
                let cuts = [(0, a), (a, b), (b, n)];
                let (mut got, mut at, mut lines) = (Vec::new(), 0, 0);
                for range in cuts {
                    let mut part = Vec::new();
                    let region = read_range(&Input::plain(&p), 0, range, &mut |r| {
                        part.push(r);
                        true
                    })
                    .unwrap();
                    if range.0 < range.1 {
                        assert_eq!(region.start, at, "cuts {cuts:?}");
                        at = region.end;
                    }
                    got.extend(
                        part.into_iter()
                            .map(|r| (r.line + lines, r.offset, r.bytes)),
                    );
                    if range.0 < range.1 {
                        lines += region.lines;
                    }
                }
                assert_eq!(at, n, "cuts {cuts:?}");
                assert_eq!(got, whole, "cuts {cuts:?}");
            }
        }
    }

    #[test]
    fn only_plain_json_lines_and_text_lines_split() {
        let dir = tempfile::tempdir().unwrap();
        let plain = |name: &str, bytes: &[u8]| Input::plain(write(&dir, name, bytes));
        assert!(splittable(&plain("a.jsonl", b"[1]\n"), TextUnit::Line).unwrap());
        assert!(splittable(&plain("a.json", b" {\"a\":1}\n"), TextUnit::Line).unwrap());
        assert!(!splittable(&plain("b.json", b" [{\"a\":1}]"), TextUnit::Line).unwrap());
        assert!(splittable(&plain("c.txt", b"x\n"), TextUnit::Line).unwrap());
        assert!(!splittable(&plain("d.txt", b"x\n"), TextUnit::File).unwrap());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{}\n").unwrap();
        assert!(!splittable(&plain("e.jsonl", &gz.finish().unwrap()), TextUnit::Line).unwrap());
    }

    #[test]
    fn an_oversized_record_streams_past_and_the_next_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let huge = MAX_RECORD_BYTES + 10;
        let mut line = vec![b'x'; huge];
        line.push(b'\n');
        // a gzip of it inflates ~1000x: still bounded
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&line).unwrap();
        gz.write_all(b"{\"a\":1}\n").unwrap();
        let p = write(&dir, "big.jsonl.gz", &gz.finish().unwrap());
        let recs = collect(&p, TextUnit::Line);
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0].kind,
            RawKind::Oversized {
                bytes: huge as u64 + 1
            }
        );
        assert_eq!(recs[0].bytes.len(), EXCERPT_BYTES);
        assert_eq!(
            (recs[1].line, recs[1].bytes.as_slice()),
            (2, &b"{\"a\":1}"[..])
        );

        let mut array = b"[\"".to_vec();
        array.extend(std::iter::repeat_n(b'y', huge));
        array.extend_from_slice(b"\", {\"b\": 2}]");
        let p = write(&dir, "big.json", &array);
        let recs = collect(&p, TextUnit::Line);
        assert_eq!(
            recs[0].kind,
            RawKind::Oversized {
                bytes: huge as u64 + 2
            }
        );
        assert_eq!(recs[1].bytes, b"{\"b\": 2}");
    }

    #[test]
    fn byte_order_marks_and_json_lines_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "bom.jsonl", b"\xEF\xBB\xBF{\"a\":1}\n{\"b\":2}\n");
        let recs = collect(&p, TextUnit::Line);
        assert_eq!(recs[0].bytes, b"{\"a\":1}");
        assert_eq!((recs[0].offset, recs[1].offset), (3, 11));
        let p = write(&dir, "arr.jsonl", b"[1, 2]\n{\"b\":2}\n");
        assert_eq!(collect(&p, TextUnit::Line).len(), 2);
        let p = write(&dir, "arr.json", b"[1, 2]\n{\"b\":2}\n");
        let err = read_input(&Input::plain(&p), 0, TextUnit::Line, &mut |_| true).unwrap_err();
        assert!(
            err.to_string().contains("arr.json:2: data after the end"),
            "{err}"
        );
        let p = write(&dir, "wide.jsonl", b"\xFF\xFE{\0}\0");
        let err = read_input(&Input::plain(&p), 0, TextUnit::Line, &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("UTF-16"), "{err}");
    }

    #[test]
    fn json_lines_with_blank_lines_and_truncated_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "a.jsonl", b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":");
        let recs = collect(&p, TextUnit::Line);
        assert_eq!(recs.len(), 3);
        assert_eq!((recs[0].line, recs[0].offset), (1, 0));
        assert_eq!((recs[1].line, recs[1].offset), (3, 9));
        assert_eq!(recs[1].bytes, b"{\"b\":2}");
        assert_eq!(recs[2].kind, RawKind::JsonLine { unterminated: true });
        assert_eq!(
            recs[1].kind,
            RawKind::JsonLine {
                unterminated: false
            }
        );
    }

    #[test]
    fn json_array_elements_with_lines_and_tricky_strings() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "a.json",
            b"[\n  {\"t\": \"a,]\\\"}\"},\n  {\"n\": [1, {\"x\": 2}]}\n]\n",
        );
        let recs = collect(&p, TextUnit::Line);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].bytes, b"{\"t\": \"a,]\\\"}\"}");
        assert_eq!(recs[0].line, 2);
        assert_eq!(recs[1].line, 3);
        assert_eq!(recs[1].bytes, b"{\"n\": [1, {\"x\": 2}]}");
        let v: serde_json::Value = serde_json::from_slice(&recs[0].bytes).unwrap();
        assert_eq!(v["t"], "a,]\"}");
    }

    #[test]
    fn json_array_cut_off_is_one_unterminated_element() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "a.json", b"[{\"a\": 1}, {\"b\": [2, ");
        let recs = collect(&p, TextUnit::Line);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].kind, RawKind::JsonElement { unterminated: true });
    }

    #[test]
    fn gzip_and_zstd_are_detected_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"{\"a\":1}\n{\"a\":2}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).unwrap();
        let p = write(&dir, "a.jsonl.gz", &gz.finish().unwrap());
        assert_eq!(collect(&p, TextUnit::Line).len(), 2);
        // A minimal zstd frame (raw block) holding `body`, built by hand to avoid an encoder dep.
        let mut z = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, body.len() as u8];
        let header = ((body.len() as u32) << 3) | 1; // last block, raw
        z.extend_from_slice(&header.to_le_bytes()[..3]);
        z.extend_from_slice(body);
        let p = write(&dir, "b.jsonl.zst", &z);
        let recs = collect(&p, TextUnit::Line);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].bytes, b"{\"a\":2}");
    }

    #[test]
    fn text_by_line_or_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "wiki.txt", b"first doc\n\nsecond doc\n");
        assert_eq!(collect(&p, TextUnit::Line).len(), 2);
        let whole = collect(&p, TextUnit::File);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].kind, RawKind::Text);
    }

    #[test]
    fn expand_reports_missing_files_and_empty_globs() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir, "b.jsonl", b"{}\n");
        write(&dir, "a.jsonl", b"{}\n");
        let pat = format!("{}/*.jsonl", dir.path().display());
        let got = expand(std::slice::from_ref(&pat)).unwrap();
        assert!(got[0].ends_with("a.jsonl") && got[1].ends_with("b.jsonl"));
        let err = expand(&["/nope/x.jsonl".to_string()]).unwrap_err();
        assert!(err.to_string().contains("/nope/x.jsonl"));
        assert!(expand(&[format!("{}/*.csv", dir.path().display())]).is_err());
    }
}
