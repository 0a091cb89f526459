//! fleet's page tokens (fleet.md §5.5): what `nextPageToken` carries, how it is checked,
//! and how a list is cut into pages.
//!
//! A token is the URL-safe base64 (with padding) of four bytes: the page size and the page
//! number (first page = 1), each a little-endian `u16`. A server refuses a token whose page
//! size is not its own, and hands out a token whenever a page is full, so a total that is a
//! multiple of the page size ends with an empty page (`{}`).
//!
//! Decoding errors carry the messages of fleet's Go decoder (`illegal base64 data at input
//! byte N`, `EOF`, `unexpected EOF`), so a client sees what fleet would have said. Unlike
//! fleet, page offsets are computed without 16-bit overflow: fleet's page 11852 of 100
//! items wrapped around to an earlier slice of the list.

/// A page of a listing: its size and its number (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// Items per page (the server's `token_limit`).
    pub limit: u16,
    /// The page, from 1.
    pub page: u16,
}

/// Why a `nextPageToken` was refused; `Display` is fleet's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The query had several `nextPageToken` values.
    #[error("too many values for page token")]
    TooManyValues,
    /// Not base64 (Go's `CorruptInputError`: the offset of the offending byte).
    #[error("illegal base64 data at input byte {0}")]
    Base64(usize),
    /// The token decodes to no bytes at all.
    #[error("EOF")]
    Empty,
    /// The token decodes to fewer than four bytes.
    #[error("unexpected EOF")]
    Short,
    /// The token's page size is not the server's.
    #[error("token limit must be {0}")]
    Limit(u16),
    /// The token's page is 0.
    #[error("token page must be greater than zero")]
    PageZero,
}

impl PageToken {
    /// The first page of `limit` items.
    pub fn first(limit: u16) -> PageToken {
        PageToken { limit, page: 1 }
    }

    /// The page after this one; `None` past page 65535, where tokens end.
    pub fn next(self) -> Option<PageToken> {
        Some(PageToken {
            limit: self.limit,
            page: self.page.checked_add(1)?,
        })
    }

    /// The token's text: URL-safe base64, with padding, of `limit` and `page` as
    /// little-endian `u16`s.
    pub fn encode(self) -> String {
        let [a, b] = self.limit.to_le_bytes();
        let [c, d] = self.page.to_le_bytes();
        encode_url_base64(&[a, b, c, d])
    }

    /// Reads a token's text (without checking it against a server's limit). Bytes after
    /// the first four are ignored, as fleet ignores them.
    ///
    /// # Errors
    /// [`TokenError::Base64`], [`TokenError::Empty`] or [`TokenError::Short`].
    pub fn decode(text: &str) -> Result<PageToken, TokenError> {
        let bytes = decode_url_base64(text.as_bytes()).map_err(TokenError::Base64)?;
        match bytes.as_slice() {
            [] => Err(TokenError::Empty),
            [a, b, c, d, ..] => Ok(PageToken {
                limit: u16::from_le_bytes([*a, *b]),
                page: u16::from_le_bytes([*c, *d]),
            }),
            _ => Err(TokenError::Short),
        }
    }

    /// Checks a decoded token against the server's page size.
    ///
    /// # Errors
    /// [`TokenError::Limit`] or [`TokenError::PageZero`].
    pub fn validate(self, limit: u16) -> Result<PageToken, TokenError> {
        if self.limit != limit {
            return Err(TokenError::Limit(limit));
        }
        if self.page == 0 {
            return Err(TokenError::PageZero);
        }
        Ok(self)
    }

    /// The page a request asks for, from its `nextPageToken` query values: the first page
    /// when there is none.
    ///
    /// # Errors
    /// Any [`TokenError`].
    pub fn from_query<'a>(
        values: impl IntoIterator<Item = &'a str>,
        limit: u16,
    ) -> Result<PageToken, TokenError> {
        let mut values = values.into_iter();
        let Some(first) = values.next() else {
            return Ok(PageToken::first(limit));
        };
        if values.next().is_some() {
            return Err(TokenError::TooManyValues);
        }
        PageToken::decode(first)?.validate(limit)
    }

    /// This page of `all`, and the token of the next page when this one is full.
    pub fn slice<T>(self, mut all: Vec<T>) -> (Vec<T>, Option<PageToken>) {
        let limit = usize::from(self.limit);
        let start = usize::from(self.page.saturating_sub(1)) * limit;
        if start >= all.len() {
            return (Vec::new(), None);
        }
        let stop = start + limit;
        let next = if stop <= all.len() { self.next() } else { None };
        all.truncate(stop);
        (all.split_off(start), next)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Go's `base64.URLEncoding.EncodeToString`.
fn encode_url_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The 6-bit value of a base64 character of the URL-safe alphabet.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Go's `base64.URLEncoding.DecodeString` (padded, not strict; `\r` and `\n` skipped),
/// failing with the input offset Go's `CorruptInputError` reports.
fn decode_url_base64(src: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    while si < src.len() {
        let mut quad = [0u8; 4];
        let mut len = 4;
        let mut j = 0;
        let mut trailing_garbage = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // Padding is required: a quantum cut short is corrupt where it began.
                return Err(si - j);
            }
            let c = src[si];
            si += 1;
            if let Some(v) = sextet(c) {
                quad[j] = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' || j < 2 {
                return Err(si - 1);
            }
            if j == 2 {
                // "==": the second '=' must follow (newlines aside).
                while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                    si += 1;
                }
                if si == src.len() {
                    return Err(src.len());
                }
                if src[si] != b'=' {
                    return Err(si - 1);
                }
                si += 1;
            }
            while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                si += 1;
            }
            if si < src.len() {
                trailing_garbage = Some(si);
            }
            len = j;
            break;
        }
        let n = u32::from(quad[0]) << 18
            | u32::from(quad[1]) << 12
            | u32::from(quad[2]) << 6
            | u32::from(quad[3]);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..len - 1]);
        if let Some(at) = trailing_garbage {
            return Err(at);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // fleet's TestPageTokenEncode, and the limit-2 page-2 token seen on the wire.
    #[test]
    fn page_token_encode() {
        let t = |limit, page| PageToken { limit, page }.encode();
        assert_eq!(t(12482, 0), "wjAAAA==");
        assert_eq!(t(19, 11852), "EwBMLg==");
        assert_eq!(t(100, 11852), "ZABMLg==");
        assert_eq!(t(2, 2), "AgACAA==");
        assert_eq!(encode_url_base64(&[0xfb, 0xff]), "-_8=");
    }

    // fleet's TestPageTokenDecode.
    #[test]
    fn page_token_decode() {
        assert_eq!(
            PageToken::decode("_wMAAA=="),
            Ok(PageToken {
                limit: 1023,
                page: 0
            })
        );
        assert_eq!(
            PageToken::decode("LQAJAA=="),
            Ok(PageToken { limit: 45, page: 9 })
        );
        assert_eq!(PageToken::decode("basdfasdf"), Err(TokenError::Base64(8)));
        assert_eq!(PageToken::decode(""), Err(TokenError::Empty));
        assert_eq!(PageToken::decode("bogus"), Err(TokenError::Base64(4)));
        assert_eq!(PageToken::decode("AgA="), Err(TokenError::Short));
        assert_eq!(PageToken::decode("abc"), Err(TokenError::Base64(0)));
        assert_eq!(PageToken::decode("ab=c"), Err(TokenError::Base64(2)));
        assert_eq!(PageToken::decode("a==="), Err(TokenError::Base64(1)));
        assert_eq!(
            PageToken::decode("AgACAA=="),
            Ok(PageToken::first(2).next().unwrap())
        );
        assert_eq!(
            PageToken::decode("AgAC\nAA==").map(|t| t.page),
            Ok(2),
            "newlines are skipped"
        );
        assert_eq!(PageToken::decode("AgACAA==x"), Err(TokenError::Base64(8)));
        assert_eq!(PageToken::decode("AgACAA="), Err(TokenError::Base64(7)));
        assert_eq!(
            PageToken::decode("AgACAAAA"),
            Ok(PageToken { limit: 2, page: 2 }),
            "bytes after the fourth are ignored"
        );
        for limit in [0, 1, 100, 12482, u16::MAX] {
            for page in [0, 1, 2, 11852, u16::MAX] {
                let t = PageToken { limit, page };
                assert_eq!(PageToken::decode(&t.encode()), Ok(t));
            }
        }
    }

    // fleet's TestFindNextPageToken and TestValidatePageToken.
    #[test]
    fn find_next_page_token() {
        let find = |v: &[&str]| PageToken::from_query(v.iter().copied(), 100);
        assert_eq!(
            find(&["ZABMLg=="]),
            Ok(PageToken {
                limit: 100,
                page: 11852
            })
        );
        assert_eq!(find(&[]), Ok(PageToken::first(100)));
        assert_eq!(
            find(&["LQAJAA==", "_wMAAA=="]),
            Err(TokenError::TooManyValues)
        );
        assert!(matches!(find(&["bogus"]), Err(TokenError::Base64(_))));
        assert_eq!(find(&[""]), Err(TokenError::Empty));
        let v = |limit, page| PageToken { limit, page }.validate(100);
        assert!(v(100, 9).is_ok());
        assert_eq!(v(20, 9), Err(TokenError::Limit(100)));
        assert_eq!(v(100, 0), Err(TokenError::PageZero));
        assert_eq!(
            TokenError::Limit(100).to_string(),
            "token limit must be 100"
        );
        assert_eq!(
            TokenError::Base64(4).to_string(),
            "illegal base64 data at input byte 4"
        );
    }

    // fleet's list paging: 103 items by 60, and a full last page yields an empty one.
    #[test]
    fn full_page_means_token() {
        let all: Vec<u32> = (0..103).collect();
        let (items, next) = PageToken::first(60).slice(all.clone());
        assert_eq!(items, (0..60).collect::<Vec<_>>());
        let next = next.unwrap();
        assert_eq!(next, PageToken { limit: 60, page: 2 });
        let (items, none) = next.slice(all);
        assert_eq!(items, (60..103).collect::<Vec<_>>());
        assert_eq!(none, None);

        let (items, next) = PageToken::first(2).slice(vec![1, 2]);
        assert_eq!(items, [1, 2]);
        let (items, next) = next.unwrap().slice(vec![1, 2]);
        assert!(items.is_empty());
        assert_eq!(next, None);
        let (items, next) = PageToken {
            limit: 100,
            page: 11852,
        }
        .slice((0..1000).collect());
        assert!(items.is_empty() && next.is_none(), "no 16-bit wrap-around");
        assert_eq!(
            PageToken {
                limit: 1,
                page: u16::MAX
            }
            .next(),
            None
        );
    }
}
