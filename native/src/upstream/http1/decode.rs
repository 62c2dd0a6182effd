//! A response body's framing, decoded from the connection's read buffer:
//! a length, chunks (with their extensions skipped and trailers parsed), or
//! everything until the connection closes. The rules and limits are hyper's
//! (the differential test in `tests` holds them together): hexadecimal sizes
//! that must not overflow, CRLF line ends only, at most 16 KiB of chunk
//! extensions and of trailer section per body.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use super::WireError;

/// Bytes of chunk extensions a body may carry in all (hyper's limit).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// Bytes a trailer section may take (hyper's limit).
const TRAILERS_LIMIT: usize = 16 * 1024;
/// Trailer fields a body may carry (hyper's default header count).
const MAX_TRAILERS: usize = super::MAX_HEADERS;

/// How much is left of a body, and how its end is known.
#[derive(Debug)]
pub enum Decoder {
    Length(u64),
    Chunked(Chunked),
    /// Until the connection closes (no length, no chunking).
    Eof,
}

/// What the buffer gave.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More bytes must be read first.
    More,
}

impl Decoder {
    /// Takes what the buffer holds of the body, leaving anything past its
    /// end (which makes the connection unusable: see `session`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        match self {
            Self::Length(0) => Ok(Decoded::End),
            Self::Length(_) | Self::Eof if buf.is_empty() => Ok(Decoded::More),
            Self::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                Ok(Decoded::Data(buf.split_to(n as usize).freeze()))
            }
            Self::Eof => Ok(Decoded::Data(buf.split().freeze())),
            Self::Chunked(chunked) => chunked.decode(buf),
        }
    }

    /// The connection closed: the end of a close-delimited body, a broken
    /// one otherwise.
    pub fn at_eof(&self) -> Result<Decoded, WireError> {
        match self {
            Self::Eof | Self::Length(0) => Ok(Decoded::End),
            Self::Chunked(c) if c.state == State::Done => Ok(Decoded::End),
            _ => Err(WireError::BodyCut),
        }
    }

    /// Nothing more will come: the body is complete without another read.
    pub fn is_end(&self) -> bool {
        match self {
            Self::Length(0) => true,
            Self::Chunked(c) => c.state == State::Done,
            _ => false,
        }
    }

    pub fn exact_len(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first digit of a size.
    Start,
    Size,
    /// Whitespace after a size.
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: CR (the end) or a trailer field.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    /// Trailers parsed, to be handed out before the end.
    Trailers,
    Done,
}

/// The chunked decoder's state.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    extensions: u64,
    trailers: Option<Vec<u8>>,
    trailer_count: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Start,
            size: 0,
            extensions: 0,
            trailers: None,
            trailer_count: 0,
        }
    }
}

fn hex(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Trailers => {
                    self.state = State::Done;
                    let section = self.trailers.take().unwrap_or_default();
                    return parse_trailers(&section).map(Decoded::Trailers);
                }
                State::Data => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = self.size.min(buf.len() as u64);
                    self.size -= n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                }
                _ => {}
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::More);
            };
            let _ = buf.split_to(1);
            self.state = self.step(byte)?;
        }
    }

    /// One byte of the framing (not of the data).
    fn step(&mut self, byte: u8) -> Result<State, WireError> {
        let bad = |why| Err(WireError::Chunk(why));
        Ok(match (self.state, byte) {
            (State::Start, b) => match hex(b) {
                Some(d) => {
                    self.size = d;
                    State::Size
                }
                None => return bad("chunk size does not start with a hex digit"),
            },
            (State::Size, b) if hex(b).is_some() => {
                let d = hex(b).unwrap_or(0);
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(d))
                    .ok_or(WireError::Chunk("chunk size overflows"))?;
                State::Size
            }
            (State::Size | State::SizeLws, b'\t' | b' ') => State::SizeLws,
            (State::Size | State::SizeLws, b';') => State::Extension,
            (State::Size | State::SizeLws, b'\r') => State::SizeLf,
            (State::Size | State::SizeLws, _) => return bad("invalid chunk size line"),
            (State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return bad("bare LF in a chunk extension"),
            (State::Extension, _) => {
                self.extensions += 1;
                if self.extensions >= EXTENSIONS_LIMIT {
                    return bad("chunk extensions past their limit");
                }
                State::Extension
            }
            (State::SizeLf, b'\n') if self.size == 0 => State::EndCr,
            (State::SizeLf, b'\n') => State::Data,
            (State::SizeLf, _) => return bad("chunk size line without LF"),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr, _) => return bad("chunk data without CR"),
            (State::DataLf, b'\n') => State::Start,
            (State::DataLf, _) => return bad("chunk data without LF"),
            (State::EndCr, b'\r') => State::EndLf,
            (State::EndCr, b) => {
                self.trailer_byte(b)?;
                State::Trailer
            }
            (State::Trailer, b'\r') => {
                self.trailer_byte(b'\r')?;
                State::TrailerLf
            }
            (State::Trailer, b) => {
                self.trailer_byte(b)?;
                State::Trailer
            }
            (State::TrailerLf, b'\n') => {
                self.trailer_count += 1;
                if self.trailer_count > MAX_TRAILERS {
                    return bad("too many trailer fields");
                }
                self.trailer_byte(b'\n')?;
                State::EndCr
            }
            (State::TrailerLf, _) => return bad("trailer field without LF"),
            (State::EndLf, b'\n') if self.trailers.is_some() => State::Trailers,
            (State::EndLf, b'\n') => State::Done,
            (State::EndLf, _) => return bad("last chunk without LF"),
            (State::Data | State::Trailers | State::Done, _) => {
                unreachable!("handled before a byte is taken")
            }
        })
    }

    fn trailer_byte(&mut self, byte: u8) -> Result<(), WireError> {
        let section = self.trailers.get_or_insert_with(Vec::new);
        if section.len() >= TRAILERS_LIMIT {
            return Err(WireError::Chunk("trailer section past its limit"));
        }
        section.push(byte);
        Ok(())
    }
}

fn parse_trailers(section: &[u8]) -> Result<HeaderMap, WireError> {
    let mut section = section.to_vec();
    section.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    let bad = || WireError::Chunk("malformed trailer section");
    let parsed = match httparse::parse_headers(&section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(bad()),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| bad())?;
        trailers.append(name, value);
    }
    Ok(trailers)
}
