//! Text the services write on every request, without `fmt`.

/// An IPv4 address in dotted-quad text, as `Display` writes it, on the stack: the gateway's
/// `X-Forwarded-For` on every request, and every policy condition that reads `context.ip`. The
/// formatting machinery (four `u8` through `Display`) cost more than the rest of either.
pub struct Ipv4Text {
    text: [u8; 15],
    len: usize,
}

impl Ipv4Text {
    pub fn new(ip: std::net::Ipv4Addr) -> Self {
        let mut text = [0u8; 15];
        let mut len = 0;
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            let (hundreds, tens, ones) = (octet / 100, octet / 10 % 10, octet % 10);
            if hundreds > 0 {
                text[len] = b'0' + hundreds;
                len += 1;
            }
            if hundreds > 0 || tens > 0 {
                text[len] = b'0' + tens;
                len += 1;
            }
            text[len] = b'0' + ones;
            len += 1;
        }
        Self { text, len }
    }

    pub fn as_str(&self) -> &str {
        // Digits and dots only.
        std::str::from_utf8(&self.text[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_is_what_display_writes() {
        let mut x: u32 = 0x9e37_79b9;
        let mut addresses = vec![0u32, u32::MAX, 0x0a01_0203, 0x7f00_0001, 0x6400_0a09];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            addresses.push(x);
        }
        for a in addresses {
            let ip = std::net::Ipv4Addr::from(a);
            assert_eq!(Ipv4Text::new(ip).as_str(), ip.to_string());
        }
    }
}
