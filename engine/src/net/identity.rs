//! Who is on the other end: read from the subject common name (CN) of the peer's certificate.
//!
//! Naming scheme (the consortium CA only issues these):
//! - validator node `v`:        `CN=reckon-node-<v>`         e.g. `reckon-node-3`
//! - institution client `i`:    `CN=reckon-institution-<i>`  e.g. `reckon-institution-12`
//!
//! Numbers are decimal `u32` in canonical form (no sign, no leading zeros). A certificate that
//! chains to the CA but whose CN does not follow the scheme is refused (`NetError::BadIdentity`).
//!
//! The CN is read with a minimal DER walker (rcgen's parser needs the `x509-parser` feature, which
//! the workspace does not enable). It never panics: any malformed input yields `None`.

use std::fmt;

const NODE_PREFIX: &str = "reckon-node-";
const INSTITUTION_PREFIX: &str = "reckon-institution-";

/// An authenticated peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    Node { validator: u32 },
    Institution { institution: u32 },
}

impl PeerIdentity {
    pub fn common_name(&self) -> String {
        match self {
            PeerIdentity::Node { validator } => format!("{NODE_PREFIX}{validator}"),
            PeerIdentity::Institution { institution } => {
                format!("{INSTITUTION_PREFIX}{institution}")
            }
        }
    }

    pub fn from_common_name(common_name: &str) -> Option<PeerIdentity> {
        if let Some(number) = common_name.strip_prefix(NODE_PREFIX) {
            return parse_canonical_u32(number).map(|validator| PeerIdentity::Node { validator });
        }
        let number = common_name.strip_prefix(INSTITUTION_PREFIX)?;
        parse_canonical_u32(number).map(|institution| PeerIdentity::Institution { institution })
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.common_name())
    }
}

fn parse_canonical_u32(text: &str) -> Option<u32> {
    let value: u32 = text.parse().ok()?;
    (value.to_string() == text).then_some(value)
}

/// Reads one DER TLV: (tag, contents, rest). Only low-tag-number form, definite lengths <= 4 bytes.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, after) = (rest.get(..count)?, rest.get(count..)?);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let contents = rest.get(..len)?;
    Some((tag, contents, rest.get(len..)?))
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_VERSION: u8 = 0xA0;
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject CN of an X.509 certificate in DER, if it has one in a string type we accept.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    let (TAG_SEQUENCE, certificate, _) = read_tlv(cert_der)? else {
        return None;
    };
    let (TAG_SEQUENCE, tbs, _) = read_tlv(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = read_tlv(rest)?;
    if tag == TAG_VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer, validity; then subject.
    for _ in 0..4 {
        rest = read_tlv(rest)?.2;
    }
    let (TAG_SEQUENCE, mut rdns, _) = read_tlv(rest)? else {
        return None;
    };
    while !rdns.is_empty() {
        let (TAG_SET, mut attributes, after) = read_tlv(rdns)? else {
            return None;
        };
        rdns = after;
        while !attributes.is_empty() {
            let (TAG_SEQUENCE, attribute, after) = read_tlv(attributes)? else {
                return None;
            };
            attributes = after;
            let (TAG_OID, oid, value) = read_tlv(attribute)? else {
                return None;
            };
            if oid == OID_COMMON_NAME {
                return common_name_value(value);
            }
        }
    }
    None
}

fn common_name_value(value: &[u8]) -> Option<String> {
    const UTF8_STRING: u8 = 0x0C;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;
    let (tag, text, _) = read_tlv(value)?;
    if !matches!(tag, UTF8_STRING | PRINTABLE_STRING | IA5_STRING) {
        return None;
    }
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_names_round_trip_and_are_canonical() {
        for identity in [
            PeerIdentity::Node { validator: 3 },
            PeerIdentity::Institution { institution: 0 },
        ] {
            assert_eq!(
                PeerIdentity::from_common_name(&identity.common_name()),
                Some(identity)
            );
        }
        assert_eq!(
            PeerIdentity::Node { validator: 3 }.to_string(),
            "reckon-node-3"
        );
        for bad in [
            "reckon-node-03",
            "reckon-node-+3",
            "reckon-node-",
            "reckon-node-4294967296",
            "node-1",
            "",
        ] {
            assert_eq!(PeerIdentity::from_common_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_cn_from_an_rcgen_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Bank");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "reckon-node-7");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            subject_common_name(cert.der()).as_deref(),
            Some("reckon-node-7")
        );
        assert_eq!(
            subject_common_name(&cert.der()[..40]),
            None,
            "truncated DER"
        );
    }

    proptest! {
        #[test]
        fn der_walker_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = subject_common_name(&bytes);
        }
    }
}
