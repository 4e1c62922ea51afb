//! The parts of Python and jinja2 that Hugging Face chat templates rely on and minijinja does not
//! do the same way: `tojson` as transformers defines it, Python's `str()` when a value is printed,
//! `raise_exception`, `strftime_now`, and the Python string methods. All of them are also aware of
//! the masking sentinels (see `template.rs`), so that a template sees the same text it would see
//! without them.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Output, State, Value};
use std::fmt::Write as _;

use super::spans::is_sentinel;

/// Attached to the minijinja error raised by `raise_exception`, so that `render` can tell the
/// template's own message apart from an engine failure.
#[derive(Debug)]
pub(super) struct Raised(pub String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// The date `strftime_now` reports. A wall-clock date would make the tokens of a record depend on
/// the day `ftx prepare` ran (artifacts would not be reproducible, caches and dedup hashes would
/// change overnight). 26 Jul 2024 is the fallback that Llama 3.1's own template uses when
/// `strftime_now` is missing, so those renders are the same either way.
const FIXED_DATE: (i32, u32, u32) = (2024, 7, 26);

pub(super) fn install(env: &mut Environment<'static>) {
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    // jinja2's default `Undefined`: prints as "", iterates as empty, fails on attribute access.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_formatter(|out: &mut Output, _: &State, value: &Value| {
        match value.as_str() {
            Some(s) => out.write_str(s),
            None => out.write_str(&py_str(value)),
        }
        .map_err(Error::from)
    });
    env.set_unknown_method_callback(string_methods);
    env.add_filter("tojson", tojson);
    env.add_filter("string", |v: Value| match v.as_str() {
        Some(_) => v,
        None => Value::from(py_str(&v)),
    });
    env.add_filter("trim", |s: &str, chars: Option<&str>| {
        py_strip(s, chars, true, true)
    });
    // jinja2's tests, where minijinja's differ: `none is iterable` is false, a string is a
    // sequence, `undefined is iterable` is true (it iterates as empty), a bool is a number.
    env.add_test("iterable", |v: &Value| {
        !matches!(
            v.kind(),
            ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Plain
        )
    });
    env.add_test("sequence", |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::Seq | ValueKind::String | ValueKind::Map | ValueKind::Undefined
        )
    });
    env.add_test("number", |v: &Value| {
        matches!(v.kind(), ValueKind::Number | ValueKind::Bool)
    });
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(Raised(msg)))
    });
    env.add_function("strftime_now", |fmt: &str| strftime(fmt, FIXED_DATE));
}

/// Python string methods (minijinja_contrib's pycompat), with the ones whose result would change
/// because of a sentinel made sentinel-transparent.
fn string_methods(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "strip" | "lstrip" | "rstrip" => {
                let chars: (Option<&str>,) = minijinja::value::from_args(args)?;
                let (left, right) = (method != "rstrip", method != "lstrip");
                return Ok(Value::from(py_strip(s, chars.0, left, right)));
            }
            // Qwen3 asks `content.startswith('<tool_response>')`: the sentinel in front must not
            // change the answer.
            "startswith" | "endswith" if s.chars().any(is_sentinel) => {
                let plain: String = s.chars().filter(|c| !is_sentinel(*c)).collect();
                let plain = Value::from(plain);
                return minijinja_contrib::pycompat::unknown_method_callback(
                    state, &plain, method, args,
                );
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Python's `str.isspace`, which also counts the ASCII separators 0x1C–0x1F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip`/`lstrip`/`rstrip` that steps over sentinels instead of stopping at them, and keeps
/// them: stripping `"\u{..}"hi"\u{..}"` of `"` gives the sentinels around `hi`.
pub(super) fn py_strip(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let strip = |c: char| match chars {
        Some(set) => set.contains(c),
        None => py_space(c),
    };
    let mut kept_front = String::new();
    let mut rest = s;
    if left {
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            if is_sentinel(c) {
                kept_front.push(c);
            } else if !strip(c) {
                cut = i;
                break;
            }
        }
        rest = &rest[cut..];
        if cut == s.len() {
            // Everything was stripped: only the sentinels remain, in order.
            return kept_front;
        }
    }
    let mut kept_back = Vec::new();
    if right {
        let mut cut = 0;
        for (i, c) in rest.char_indices().rev() {
            if is_sentinel(c) {
                kept_back.push(c);
            } else if !strip(c) {
                cut = i + c.len_utf8();
                break;
            }
        }
        rest = &rest[..cut];
    }
    let mut out = kept_front;
    out.push_str(rest);
    out.extend(kept_back.iter().rev());
    out
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`. minijinja's own filter escapes `<`, `>`, `&` and
/// `'` for HTML and writes compact JSON, which would change the prompt the model was trained on.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => " ".repeat(v.as_i64().unwrap_or(0).max(0) as usize),
        }),
    };
    let (item_sep, key_sep) = match separators.filter(|v| !v.is_none()) {
        Some(v) => {
            let a = v.get_item(&Value::from(0))?;
            let b = v.get_item(&Value::from(1))?;
            match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                _ => return Err(Error::new(ErrorKind::InvalidOperation, "bad separators")),
            }
        }
        // Python's defaults: no space after "," when indenting (the newline separates).
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let json = Json {
        indent: indent.as_deref(),
        item_sep: &item_sep,
        key_sep: &key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    json.dump(value, 0, &mut out)?;
    Ok(Value::from(out))
}

struct Json<'a> {
    indent: Option<&'a str>,
    item_sep: &'a str,
    key_sep: &'a str,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl Json<'_> {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(ind) = self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn dump(&self, v: &Value, level: usize, out: &mut String) -> Result<(), Error> {
        match v.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&py_number(v, true)),
            ValueKind::String => {
                json_string(v.as_str().unwrap_or_default(), self.ensure_ascii, out)
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.dump(item, level + 1, out)?;
                }
                self.newline(level, out);
                out.push(']');
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in v.try_iter()? {
                    let val = v.get_item(&key)?;
                    entries.push((json_key(&key)?, val));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                if entries.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                out.push('{');
                for (i, (key, val)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(level + 1, out);
                    json_string(key, self.ensure_ascii, out);
                    out.push_str(self.key_sep);
                    self.dump(val, level + 1, out)?;
                }
                self.newline(level, out);
                out.push('}');
            }
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("Object of type {kind} is not JSON serializable"),
                ))
            }
        }
        Ok(())
    }
}

/// Python converts non-string dict keys to strings in `json.dumps`.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::Number => py_number(key, true),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).to_string(),
        ValueKind::None => "null".to_string(),
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("keys must be str, int, float, bool or None, not {kind}"),
            ))
        }
    })
}

/// `json.dumps` string escaping: `"`, `\\` and control characters below 0x20, and with
/// `ensure_ascii` everything outside ASCII as `\uXXXX` (UTF-16). Sentinels are always written as
/// they are: they must survive to be found and stripped, and the data never contains them.
fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() && !is_sentinel(c) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{:04x}", u);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python prints it: ints as they are, floats as `repr(float)` (shortest round-trip
/// digits, exponent form below 1e-4 and from 1e16 up). `json` selects `NaN`/`Infinity` over
/// `nan`/`inf`.
fn py_number(v: &Value, json: bool) -> String {
    if v.is_integer() {
        return v.to_string();
    }
    let f = match f64::try_from(v.clone()) {
        Ok(f) => f,
        Err(_) => return v.to_string(),
    };
    if f.is_nan() {
        return (if json { "NaN" } else { "nan" }).to_string();
    }
    if f.is_infinite() {
        let sign = if f < 0.0 { "-" } else { "" };
        return format!("{sign}{}", if json { "Infinity" } else { "inf" });
    }
    py_float(f)
}

pub(super) fn py_float(f: f64) -> String {
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                let zeros = "0".repeat(int_len - digits.len());
                format!("{sign}{digits}{zeros}.0")
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            let zeros = "0".repeat((-exp - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        }
    } else {
        let m = if digits.len() == 1 {
            digits
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// Python's `str(value)`: what jinja2 writes for `{{ value }}` and `value|string`.
pub(super) fn py_str(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        _ => {
            let mut out = String::new();
            py_repr(v, &mut out);
            out
        }
    }
}

/// Python's `repr`, for values inside lists and dicts (`{'a': [1, True, None]}`).
fn py_repr(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&py_number(v, false)),
        ValueKind::String => py_repr_str(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&item, out);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&key, out);
                out.push_str(": ");
                py_repr(&v.get_item(&key).unwrap_or_default(), out);
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}

/// Characters `repr` escapes because `str.isprintable` is false for them. Python's table is the
/// Unicode categories Cc, Cf, Zs (but space), Zl, Zp, Cs, Co, Cn; this is the subset that shows up
/// in text (the full table would need a Unicode database). Sentinels (Co) are written raw on
/// purpose: the data never contains them, and they must survive to be found and stripped.
fn py_unprintable(c: char) -> bool {
    matches!(c as u32,
        0..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x1680
        | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb | 0xf0000..=0xffffd)
}

fn py_repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if py_unprintable(c) => {
                let n = c as u32;
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// `time.strftime` for one fixed day at midnight. Directives outside the common set are written
/// back as they are, which is also what glibc does with unknown ones.
pub(super) fn strftime(fmt: &str, (year, month, day): (i32, u32, u32)) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days_before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let yday = days_before[month as usize - 1] + day + u32::from(leap && month > 2);
    // Zeller-free weekday: days since 1970-01-01 (a Thursday).
    let y = year - 1970;
    let leaps = (1969..year)
        .filter(|y| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0)
        .count();
    let days = y as i64 * 365 + leaps as i64 + i64::from(yday) - 1;
    let wday = ((days + 3).rem_euclid(7)) as usize; // 0 = Monday
    let month_name = MONTHS[month as usize - 1];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match d {
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:>2}"),
            'm' => write!(out, "{month:02}"),
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year % 100),
            'b' | 'h' => write!(out, "{}", &month_name[..3]),
            'B' => write!(out, "{month_name}"),
            'a' => write!(out, "{}", &DAYS[wday][..3]),
            'A' => write!(out, "{}", DAYS[wday]),
            'j' => write!(out, "{yday:03}"),
            'H' | 'M' | 'S' => write!(out, "00"),
            'I' => write!(out, "12"),
            'p' => write!(out, "AM"),
            'F' => write!(out, "{year}-{month:02}-{day:02}"),
            'D' => write!(out, "{month:02}/{day:02}/{:02}", year % 100),
            'T' => write!(out, "00:00:00"),
            'u' => write!(out, "{}", wday + 1),
            'w' => write!(out, "{}", (wday + 1) % 7),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}
