//! Random values from the operating system's source: session tokens, user ids and the
//! request-id prefix all come from here. A leaf: it imports nothing of this crate, so
//! both `auth` and `telemetry` can use it without depending on each other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `N` bytes from the OS random source as URL-safe base64 without padding.
pub fn random_url_safe<const N: usize>() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_bytes_become_the_unpadded_url_safe_base64_length() {
        let value = random_url_safe::<32>().expect("the OS has randomness");
        assert_eq!(value.len(), 43);
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
