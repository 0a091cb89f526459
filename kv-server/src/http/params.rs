//! Parsing of a v2 keys request's parameters, in etcd's order and with etcd's errors
//! (`parseKeyRequest` in etcd's `v2http/client.go`).

/// Form values as Go's `Request.Form`: body values first, then the query string's, so the
/// first value of a name is the one that counts and presence is tracked separately.
#[derive(Debug, Default)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Adds the pairs of an `application/x-www-form-urlencoded` string.
    pub(crate) fn extend_urlencoded(&mut self, s: &str) -> Result<(), String> {
        for part in s.split(['&', ';']) {
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = unescape(k).ok_or_else(|| format!("invalid URL escape in {k:?}"))?;
            let v = unescape(v).ok_or_else(|| format!("invalid URL escape in {v:?}"))?;
            self.pairs.push((k, v));
        }
        Ok(())
    }

    /// The first value of `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `FormValue`: the first value, or `""`.
    pub(crate) fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// Percent-decodes a form component (`+` is a space). `None` on a malformed escape.
pub(crate) fn unescape(s: &str) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, 10, 64)`.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Every parameter of a keys request, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyParams {
    pub(crate) value: String,
    pub(crate) dir: bool,
    pub(crate) prev_value: String,
    pub(crate) prev_index: u64,
    pub(crate) prev_exist: Option<bool>,
    pub(crate) wait: bool,
    pub(crate) wait_index: u64,
    pub(crate) recursive: bool,
    pub(crate) sorted: bool,
    pub(crate) quorum: bool,
    pub(crate) stream: bool,
    pub(crate) no_value_on_success: bool,
    /// Seconds to live; `None` makes the node permanent.
    pub(crate) ttl: Option<u64>,
    /// Reset the TTL only (etcd's `refresh`).
    pub(crate) refresh: bool,
}

/// A request error: etcd's error for `code` with index 0 (parsing happens before the store).
fn req_err(code: u32, cause: &str) -> kv_core::Error {
    kv_core::Error::from_code(code, cause, 0).unwrap_or_else(|| kv_core::Error::InvalidForm {
        cause: cause.to_owned(),
        index: 0,
    })
}

/// Validates the form in etcd's order; the first failure wins.
pub(crate) fn parse(form: &Form, method_is_get: bool) -> Result<KeyParams, kv_core::Error> {
    let uint = |name: &str| -> Result<u64, ()> {
        match form.get(name) {
            None => Ok(0),
            Some(v) => parse_u64(v).ok_or(()),
        }
    };
    let boolean = |name: &str| -> Result<bool, kv_core::Error> {
        match form.get(name) {
            None => Ok(false),
            Some(v) => {
                parse_bool(v).ok_or_else(|| req_err(209, &format!("invalid value for \"{name}\"")))
            }
        }
    };
    let prev_index =
        uint("prevIndex").map_err(|_| req_err(203, "invalid value for \"prevIndex\""))?;
    let wait_index =
        uint("waitIndex").map_err(|_| req_err(203, "invalid value for \"waitIndex\""))?;
    let recursive = boolean("recursive")?;
    let sorted = boolean("sorted")?;
    let wait = boolean("wait")?;
    let dir = boolean("dir")?;
    let quorum = boolean("quorum")?;
    let stream = boolean("stream")?;
    if wait && !method_is_get {
        return Err(req_err(209, "\"wait\" can only be used with GET requests"));
    }
    let prev_value = form.value("prevValue").to_owned();
    if form.get("prevValue").is_some() && prev_value.is_empty() {
        return Err(req_err(201, "\"prevValue\" cannot be empty"));
    }
    let no_value_on_success = boolean("noValueOnSuccess")?;
    let ttl_secs = match form.value("ttl") {
        "" => None,
        v => Some(parse_u64(v).ok_or_else(|| req_err(202, "invalid value for \"ttl\""))?),
    };
    let prev_exist = match form.get("prevExist") {
        None => None,
        Some(v) => Some(parse_bool(v).ok_or_else(|| req_err(209, "invalid value for prevExist"))?),
    };
    let refresh = match form.get("refresh") {
        None => false,
        Some(v) => {
            let r = parse_bool(v).ok_or_else(|| req_err(209, "invalid value for refresh"))?;
            if r {
                if !form.value("value").is_empty() {
                    return Err(req_err(211, "A value was provided on a refresh"));
                }
                if ttl_secs.is_none() {
                    return Err(req_err(212, "No TTL value set"));
                }
            }
            r
        }
    };
    Ok(KeyParams {
        value: form.value("value").to_owned(),
        dir,
        prev_value,
        prev_index,
        prev_exist,
        wait,
        wait_index,
        recursive,
        sorted,
        quorum,
        stream,
        no_value_on_success,
        ttl: ttl_secs,
        refresh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> Form {
        let mut f = Form::default();
        f.extend_urlencoded(s).unwrap();
        f
    }

    fn code(s: &str, get: bool) -> u32 {
        parse(&form(s), get).unwrap_err().code()
    }

    #[test]
    fn etcd_validation_order_and_codes() {
        assert_eq!(code("prevIndex=x&waitIndex=y", true), 203);
        assert_eq!(code("recursive=yes", true), 209);
        assert_eq!(code("wait=true", false), 209);
        assert_eq!(code("prevValue=", false), 201);
        assert_eq!(code("ttl=-1", false), 202);
        assert_eq!(code("prevExist=maybe", false), 209);
        assert_eq!(code("refresh=true&value=x&ttl=3", false), 211);
        assert_eq!(code("refresh=true", false), 212);
        let p = parse(&form("recursive=1&sorted=T&ttl=&value=a+b%21"), true).unwrap();
        assert!(p.recursive && p.sorted);
        assert_eq!(p.ttl, None);
        assert_eq!(p.value, "a b!");
        let p = parse(&form("ttl=2&prevExist=false"), false).unwrap();
        assert_eq!(p.ttl, Some(2));
        assert_eq!(p.prev_exist, Some(false));
    }

    #[test]
    fn first_value_wins() {
        let mut f = form("value=body");
        f.extend_urlencoded("value=query").unwrap();
        assert_eq!(f.value("value"), "body");
        assert!(Form::default().extend_urlencoded("a=%zz").is_err());
    }
}
