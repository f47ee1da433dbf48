//! Reading an HTTP answer from a peer we fetch documents from (JWKS, discovery, the revocation
//! feed) with a size cap: a misbehaving or hostile peer must not make the gateway buffer without
//! bound. The request's own timeout (reqwest's total timeout) covers the body too.

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Declared or sent larger than the cap.
    TooLarge,
    Http(reqwest::Error),
}

/// The whole body, refused as soon as it is known to be larger than `max` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Http)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
