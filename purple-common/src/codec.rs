//! The one place that knows how messages are encoded on the wire (bincode
//! 2.0.1 with serde), so the codec can be swapped without touching callers.
//!
//! A frame is a fixed header followed by the payload:
//! `magic "PRPL" | protocol version (u32 LE) | payload length (u32 LE) | payload`.
//! Decoding checks the magic, the version and a hard size limit before it
//! looks at the payload, and bincode's own limit bounds every allocation.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const MAGIC: [u8; 4] = *b"PRPL";
pub const HEADER_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message is {len} bytes, more than the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("not a Purple message (bad magic bytes)")]
    BadMagic,
    #[error("protocol version {got} does not match this build's version {expected}; install matching purple-supervisor and purple-init")]
    VersionMismatch { got: u32, expected: u32 },
    #[error("message is truncated: {got} of {expected} bytes")]
    Truncated { got: usize, expected: usize },
    #[error("message has {0} trailing bytes after its payload")]
    TrailingBytes(usize),
    #[error("cannot encode message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("malformed message: {}", describe_decode_error(.0))]
    Decode(#[from] bincode::error::DecodeError),
}

/// bincode's errors print as Rust debug structures; say it in words.
fn describe_decode_error(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError;
    match e {
        DecodeError::UnexpectedEnd { .. } => "the payload ends before the message does".into(),
        DecodeError::LimitExceeded => "the payload claims more data than allowed".into(),
        DecodeError::Utf8 { .. } => "a string is not valid UTF-8".into(),
        DecodeError::UnexpectedVariant { .. } => "an unknown enum variant".into(),
        DecodeError::OtherString(s) => s.clone(),
        other => format!("{other}"),
    }
}

/// The parsed fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u32,
    pub payload_len: usize,
}

/// Hard cap on what bincode may allocate while decoding, whatever lengths a
/// hostile payload claims.
const DECODE_ALLOCATION_LIMIT: usize = 16 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_ALLOCATION_LIMIT>()
}

/// Encodes `value` as a full frame (header and payload).
pub fn encode_frame<T: Serialize>(
    value: &T,
    version: u32,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    let payload = bincode::serde::encode_to_vec(value, config())?;
    if payload.len() > limit {
        return Err(CodecError::TooLarge {
            len: payload.len(),
            limit,
        });
    }
    let len = u32::try_from(payload.len()).map_err(|_| CodecError::TooLarge {
        len: payload.len(),
        limit,
    })?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&version.to_le_bytes());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Checks a frame header: magic, exact version, payload within `limit`.
pub fn decode_header(
    header: &[u8; HEADER_LEN],
    expected_version: u32,
    limit: usize,
) -> Result<FrameHeader, CodecError> {
    if header[0..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if version != expected_version {
        return Err(CodecError::VersionMismatch {
            got: version,
            expected: expected_version,
        });
    }
    let payload_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if payload_len > limit {
        return Err(CodecError::TooLarge {
            len: payload_len,
            limit,
        });
    }
    Ok(FrameHeader {
        version,
        payload_len,
    })
}

/// Decodes a payload whose header was accepted. Every byte must be used.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8], limit: usize) -> Result<T, CodecError> {
    if payload.len() > limit {
        return Err(CodecError::TooLarge {
            len: payload.len(),
            limit,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, config())?;
    if used != payload.len() {
        return Err(CodecError::TrailingBytes(payload.len() - used));
    }
    Ok(value)
}

/// Decodes a whole frame held in memory (header, then payload).
pub fn decode_frame<T: DeserializeOwned>(
    frame: &[u8],
    expected_version: u32,
    limit: usize,
) -> Result<T, CodecError> {
    let header: &[u8; HEADER_LEN] = frame
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(CodecError::Truncated {
            got: frame.len(),
            expected: HEADER_LEN,
        })?;
    let h = decode_header(header, expected_version, limit)?;
    let payload = &frame[HEADER_LEN..];
    if payload.len() < h.payload_len {
        return Err(CodecError::Truncated {
            got: payload.len(),
            expected: h.payload_len,
        });
    }
    if payload.len() > h.payload_len {
        return Err(CodecError::TrailingBytes(payload.len() - h.payload_len));
    }
    decode_payload(payload, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let value = (String::from("hello"), vec![1u32, 2, 3]);
        let frame = encode_frame(&value, 7, 1024).unwrap_or_default();
        let back: Result<(String, Vec<u32>), _> = decode_frame(&frame, 7, 1024);
        assert_eq!(back.ok(), Some(value));
        assert!(matches!(
            decode_frame::<(String, Vec<u32>)>(&frame, 8, 1024),
            Err(CodecError::VersionMismatch { .. })
        ));
        assert!(matches!(
            decode_frame::<(String, Vec<u32>)>(&frame[..frame.len() - 1], 7, 1024),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            decode_frame::<(String, Vec<u32>)>(b"garbage garbage", 7, 1024),
            Err(CodecError::BadMagic)
        ));
        assert!(matches!(
            decode_frame::<(String, Vec<u32>)>(&frame, 7, 4),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_lengths_inside_payload_are_bounded() {
        // A payload claiming a vector of 2^60 elements must fail, not allocate.
        let mut payload = vec![0xFFu8; 1];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode_payload::<Vec<u64>>(&payload, 64).is_err());
    }
}
