//! Kubernetes' CEL ip and cidr libraries: `ip(s)`, `isIP(s)`, `ip.isCanonical(s)`, `family()`,
//! `isUnspecified()`, `isLoopback()`, `isLinkLocalMulticast()`, `isLinkLocalUnicast()`,
//! `isGlobalUnicast()`, `cidr(s)`, `isCIDR(s)`, `containsIP(ip|s)`, `containsCIDR(cidr|s)`,
//! `ip()`, `masked()`, `prefixLength()`, `string(ip)`, `string(cidr)` and `==`.
//!
//! Addresses are read as Go's `netip.ParseAddr` and `netip.ParsePrefix` read them, which is
//! stricter than `std::net` in ways a policy can see (no leading zeros in an IPv4 octet, a
//! prefix length without sign or leading zero), and printed as Go prints them (RFC 5952, an
//! embedded IPv4 address in hexadecimal). Kubernetes refuses zones and IPv4-mapped IPv6
//! addresses.

use std::sync::Arc;

use cel::common::types::{DYN_TYPE, STRING_TYPE, Type};
use cel::common::value::Val;
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError, Value};

use super::library::{Args, Ret, ret, string_arg, value};

pub const IP_TYPE_NAME: &str = "net.IP";
pub const CIDR_TYPE_NAME: &str = "net.CIDR";

/// An IPv4 or IPv6 address; the families never compare equal, as in Go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// An address and a prefix length; the address keeps its host bits (`masked()` clears them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ip,
    pub bits: u8,
}

impl Opaque for Ip {
    fn runtime_type_name(&self) -> &str {
        IP_TYPE_NAME
    }
}

impl Opaque for Cidr {
    fn runtime_type_name(&self) -> &str {
        CIDR_TYPE_NAME
    }
}

fn parse_ipv4(s: &str) -> Result<[u8; 4], String> {
    let mut out = [0u8; 4];
    let mut fields = 0;
    let mut acc: u32 = 0;
    let mut digits = 0;
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'0'..=b'9' => {
                if digits == 1 && acc == 0 {
                    return Err("IPv4 field has octet with leading zero".into());
                }
                acc = acc * 10 + u32::from(c - b'0');
                digits += 1;
                if acc > 255 {
                    return Err("IPv4 field has value >255".into());
                }
            }
            b'.' => {
                if digits == 0 {
                    return Err(format!(
                        "IPv4 field must have at least one digit (at {:?})",
                        &s[i..]
                    ));
                }
                if fields == 3 {
                    return Err("IPv4 address too long".into());
                }
                out[fields] = acc as u8;
                fields += 1;
                acc = 0;
                digits = 0;
            }
            _ => return Err(format!("unexpected character (at {:?})", &s[i..])),
        }
    }
    if fields < 3 {
        return Err("IPv4 address too short".into());
    }
    if digits == 0 {
        return Err("IPv4 field must have at least one digit".into());
    }
    out[3] = acc as u8;
    Ok(out)
}

fn parse_ipv6(input: &str) -> Result<([u8; 16], bool), String> {
    let (mut s, zoned) = match input.split_once('%') {
        Some((_, "")) => return Err("zone must be a non-empty string".into()),
        Some((addr, _)) => (addr, true),
        None => (input, false),
    };
    let mut ip = [0u8; 16];
    let mut ellipsis: Option<usize> = None;
    if let Some(rest) = s.strip_prefix("::") {
        ellipsis = Some(0);
        s = rest;
        if s.is_empty() {
            return Ok((ip, zoned));
        }
    }
    let mut i = 0;
    while i < 16 {
        let hex = s.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex == 0 {
            return Err(format!(
                "each colon-separated field must have at least one digit (at {s:?})"
            ));
        }
        if hex > 4 {
            return Err(format!("each group must have 4 or less digits (at {s:?})"));
        }
        if s.as_bytes().get(hex) == Some(&b'.') {
            if ellipsis.is_none() && i != 12 {
                return Err("embedded IPv4 address must replace the final 2 fields".into());
            }
            if i + 4 > 16 {
                return Err("too many hex fields to fit an embedded IPv4".into());
            }
            ip[i..i + 4].copy_from_slice(&parse_ipv4(s)?);
            s = "";
            i += 4;
            break;
        }
        // At most four hex digits: the group fits in 16 bits.
        let group = u16::from_str_radix(&s[..hex], 16).map_err(|e| e.to_string())?;
        ip[i..i + 2].copy_from_slice(&group.to_be_bytes());
        i += 2;
        s = &s[hex..];
        if s.is_empty() {
            break;
        }
        let Some(rest) = s.strip_prefix(':') else {
            return Err(format!("unexpected character, want colon (at {s:?})"));
        };
        if rest.is_empty() {
            return Err("colon must be followed by more characters".into());
        }
        s = rest;
        if let Some(rest) = s.strip_prefix(':') {
            if ellipsis.is_some() {
                return Err(format!("multiple :: in address (at {s:?})"));
            }
            ellipsis = Some(i);
            s = rest;
            if s.is_empty() {
                break;
            }
        }
    }
    if !s.is_empty() {
        return Err(format!("trailing garbage after address (at {s:?})"));
    }
    if i < 16 {
        let Some(at) = ellipsis else {
            return Err("address string too short".into());
        };
        let n = 16 - i;
        ip.copy_within(at..i, at + n);
        ip[at..at + n].fill(0);
    } else if ellipsis.is_some() {
        return Err("the :: must expand to at least one field of zeros".into());
    }
    Ok((ip, zoned))
}

/// Go's `netip.ParseAddr` without Kubernetes' refusals (a zone and an IPv4-mapped address are
/// accepted), as net/url checks an IPv6 literal in brackets: whether the address is IPv4, or
/// Go's message.
pub(super) fn parse_addr(s: &str) -> Result<bool, String> {
    let bad = |msg: String| format!("ParseAddr({}): {msg}", super::gofmt::quote(s.as_bytes()));
    match s.bytes().find(|c| matches!(c, b'.' | b':' | b'%')) {
        Some(b'.') => parse_ipv4(s).map(|_| true).map_err(bad),
        Some(b':') => parse_ipv6(s).map(|_| false).map_err(bad),
        Some(_) => Err(bad("missing IPv6 address".into())),
        None => Err(bad("unable to parse IP".into())),
    }
}

impl Ip {
    /// `netip.ParseAddr`, then Kubernetes' refusals.
    pub fn parse(s: &str) -> Result<Ip, String> {
        let bad = |msg: String| {
            format!(
                "IP Address {s:?} parse error during conversion from string: ParseAddr({s:?}): {msg}"
            )
        };
        let addr = match s.bytes().find(|c| matches!(c, b'.' | b':' | b'%')) {
            Some(b'.') => Ip::V4(parse_ipv4(s).map_err(bad)?),
            Some(b':') => {
                let (ip, zoned) = parse_ipv6(s).map_err(bad)?;
                if zoned {
                    return Err(format!("IP address {s:?} with zone value is not allowed"));
                }
                Ip::V6(ip)
            }
            Some(_) => return Err(bad("missing IPv6 address".into())),
            None => return Err(bad("unable to parse IP".into())),
        };
        if addr.is_4in6() {
            return Err(format!("IPv4-mapped IPv6 address {s:?} is not allowed"));
        }
        Ok(addr)
    }

    fn is_4in6(&self) -> bool {
        matches!(self, Ip::V6(b) if b[..10] == [0; 10] && b[10] == 0xff && b[11] == 0xff)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Ip::V4(b) => b,
            Ip::V6(b) => b,
        }
    }

    pub fn family(&self) -> i64 {
        match self {
            Ip::V4(_) => 4,
            Ip::V6(_) => 6,
        }
    }

    pub fn is_unspecified(&self) -> bool {
        self.bytes().iter().all(|b| *b == 0)
    }

    pub fn is_loopback(&self) -> bool {
        match self {
            Ip::V4(b) => b[0] == 127,
            Ip::V6(b) => b[..15] == [0; 15] && b[15] == 1,
        }
    }

    fn is_multicast(&self) -> bool {
        match self {
            Ip::V4(b) => b[0] & 0xf0 == 0xe0,
            Ip::V6(b) => b[0] == 0xff,
        }
    }

    pub fn is_link_local_multicast(&self) -> bool {
        match self {
            Ip::V4(b) => b[..3] == [224, 0, 0],
            Ip::V6(b) => b[0] == 0xff && b[1] & 0x0f == 0x02,
        }
    }

    pub fn is_link_local_unicast(&self) -> bool {
        match self {
            Ip::V4(b) => b[..2] == [169, 254],
            Ip::V6(b) => b[0] == 0xfe && b[1] & 0xc0 == 0x80,
        }
    }

    /// Go's definition: private and unique-local addresses count as global unicast.
    pub fn is_global_unicast(&self) -> bool {
        if matches!(self, Ip::V4(b) if *b == [255; 4]) {
            return false;
        }
        !self.is_unspecified()
            && !self.is_multicast()
            && !self.is_loopback()
            && !self.is_link_local_unicast()
    }

    /// The address with all but the first `bits` bits cleared.
    fn masked(&self, bits: u8) -> Ip {
        let mut out = *self;
        let bytes: &mut [u8] = match &mut out {
            Ip::V4(b) => b,
            Ip::V6(b) => b,
        };
        for (i, byte) in bytes.iter_mut().enumerate() {
            let keep = usize::from(bits).saturating_sub(i * 8).min(8);
            *byte &= !(0xffu16 >> keep) as u8;
        }
        out
    }

    fn max_bits(&self) -> u8 {
        match self {
            Ip::V4(_) => 32,
            Ip::V6(_) => 128,
        }
    }
}

/// Go's `Addr.String`: dotted IPv4; IPv6 in lowercase hex with the first longest run of two or
/// more zero groups written `::`.
impl std::fmt::Display for Ip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = match self {
            Ip::V4(b) => return write!(f, "{}.{}.{}.{}", b[0], b[1], b[2], b[3]),
            Ip::V6(b) => b,
        };
        let groups: Vec<u16> = b
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        let (mut best, mut best_len) = (usize::MAX, 1);
        let mut i = 0;
        while i < 8 {
            let run = groups[i..].iter().take_while(|g| **g == 0).count();
            if run > best_len {
                (best, best_len) = (i, run);
            }
            i += run.max(1);
        }
        let mut i = 0;
        while i < 8 {
            if i == best {
                f.write_str("::")?;
                i += best_len;
                continue;
            }
            if i > 0 && Some(i) != best.checked_add(best_len) {
                f.write_str(":")?;
            }
            write!(f, "{:x}", groups[i])?;
            i += 1;
        }
        Ok(())
    }
}

impl Cidr {
    /// `netip.ParsePrefix`, then Kubernetes' refusal of IPv4-mapped IPv6.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = |msg: String| {
            format!(
                "network address parse error during conversion from string: netip.ParsePrefix({s:?}): {msg}"
            )
        };
        let Some((addr, bits)) = s.rsplit_once('/') else {
            return Err(bad("no '/'".into()));
        };
        let ip = match addr.bytes().find(|c| matches!(c, b'.' | b':' | b'%')) {
            Some(b'.') => Ip::V4(parse_ipv4(addr).map_err(bad)?),
            Some(b':') => match parse_ipv6(addr).map_err(bad)? {
                (_, true) => return Err(bad("IPv6 zones cannot be present in a prefix".into())),
                (ip, false) => Ip::V6(ip),
            },
            Some(_) => return Err(bad("missing IPv6 address".into())),
            None => return Err(bad("unable to parse IP".into())),
        };
        // Decimal digits only, without sign or leading zero (a lone 0 is fine).
        let bad_bits = || bad(format!("bad bits after slash: {bits:?}"));
        if bits.is_empty()
            || !bits.bytes().all(|c| c.is_ascii_digit())
            || (bits.len() > 1 && bits.starts_with('0'))
        {
            return Err(bad_bits());
        }
        let n: u64 = bits.parse().map_err(|_| bad_bits())?;
        if n > u64::from(ip.max_bits()) {
            return Err(bad("prefix length out of range".into()));
        }
        if ip.is_4in6() {
            return Err(format!("IPv4-mapped IPv6 address {s:?} is not allowed"));
        }
        Ok(Cidr {
            addr: ip,
            // At most 128, checked above.
            bits: n as u8,
        })
    }

    pub fn masked(&self) -> Cidr {
        Cidr {
            addr: self.addr.masked(self.bits),
            bits: self.bits,
        }
    }

    /// `Prefix.Contains`: an address of the other family is never inside.
    pub fn contains_ip(&self, ip: &Ip) -> bool {
        self.addr.family() == ip.family() && ip.masked(self.bits) == self.masked().addr
    }

    /// Kubernetes' containsCIDR: `Overlaps`, and the other prefix no shorter.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        self.addr.family() == other.addr.family()
            && self.bits <= other.bits
            && other.addr.masked(self.bits) == self.masked().addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

// ---------------------------------------------------------------------------------------------
// The CEL functions.

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let ip_type = || Type::new_opaque_type(IP_TYPE_NAME);
    let cidr_type = || Type::new_opaque_type(CIDR_TYPE_NAME);
    env.add_overload("ip", "string_to_ip", vec![STRING_TYPE], ip_of)?;
    env.add_overload("isIP", "is_ip", vec![STRING_TYPE], is_ip)?;
    env.add_overload(
        "ip.isCanonical",
        "ip_is_canonical",
        vec![STRING_TYPE],
        is_canonical,
    )?;
    env.add_member_overload("family", "ip_family", DYN_TYPE, vec![], family)?;
    env.add_member_overload(
        "isUnspecified",
        "ip_is_unspecified",
        DYN_TYPE,
        vec![],
        is_unspecified,
    )?;
    env.add_member_overload(
        "isLoopback",
        "ip_is_loopback",
        DYN_TYPE,
        vec![],
        is_loopback,
    )?;
    env.add_member_overload(
        "isLinkLocalMulticast",
        "ip_is_link_local_multicast",
        DYN_TYPE,
        vec![],
        is_link_local_multicast,
    )?;
    env.add_member_overload(
        "isLinkLocalUnicast",
        "ip_is_link_local_unicast",
        DYN_TYPE,
        vec![],
        is_link_local_unicast,
    )?;
    env.add_member_overload(
        "isGlobalUnicast",
        "ip_is_global_unicast",
        DYN_TYPE,
        vec![],
        is_global_unicast,
    )?;
    // `string` keeps the standard conversions: these overloads only take the opaque types.
    env.add_overload("string", "ip_to_string", vec![ip_type()], to_string)?;
    env.add_overload("string", "cidr_to_string", vec![cidr_type()], to_string)?;
    env.add_overload("cidr", "string_to_cidr", vec![STRING_TYPE], cidr_of)?;
    env.add_overload("isCIDR", "is_cidr", vec![STRING_TYPE], is_cidr)?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip",
        DYN_TYPE,
        vec![DYN_TYPE],
        contains_ip,
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr",
        DYN_TYPE,
        vec![DYN_TYPE],
        contains_cidr,
    )?;
    env.add_member_overload("ip", "cidr_ip", DYN_TYPE, vec![], cidr_ip)?;
    env.add_member_overload("masked", "cidr_masked", DYN_TYPE, vec![], masked)?;
    env.add_member_overload(
        "prefixLength",
        "cidr_prefix_length",
        DYN_TYPE,
        vec![],
        prefix_length,
    )?;
    Ok(())
}

fn failure(function: &str, message: String) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

fn opaque<T: Opaque + Copy>(function: &str, want: &str, v: &dyn Val) -> Result<T, ExecutionError> {
    match value(v)? {
        Value::Opaque(o) => o
            .downcast_ref::<T>()
            .copied()
            .ok_or_else(|| failure(function, format!("want {want}, got another opaque value"))),
        other => Err(failure(
            function,
            format!(
                "want {want}, got {}; convert with {want}(s)",
                super::type_name(&other)
            ),
        )),
    }
}

fn ip_arg(function: &str, v: &dyn Val) -> Result<Ip, ExecutionError> {
    opaque(function, "ip", v)
}

fn cidr_arg(function: &str, v: &dyn Val) -> Result<Cidr, ExecutionError> {
    opaque(function, "cidr", v)
}

fn ip_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("ip", &*args[0])?;
    let ip = Ip::parse(&s).map_err(|e| failure("ip", e))?;
    ret(Value::Opaque(Arc::new(ip)))
}

fn is_ip<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("isIP", &*args[0])?;
    ret(Value::Bool(Ip::parse(&s).is_ok()))
}

/// Whether the string is the address as Go prints it; an address that does not parse is an
/// error, as in Kubernetes.
fn is_canonical<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("ip.isCanonical", &*args[0])?;
    let ip = Ip::parse(&s).map_err(|e| failure("ip.isCanonical", e))?;
    ret(Value::Bool(ip.to_string() == s))
}

fn ip_predicate<'b, 'v>(args: Args<'b, 'v>, name: &str, f: fn(&Ip) -> bool) -> Ret<'b, 'v> {
    ret(Value::Bool(f(&ip_arg(name, &*args[0])?)))
}

fn family<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Int(ip_arg("family", &*args[0])?.family()))
}

fn is_unspecified<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ip_predicate(args, "isUnspecified", Ip::is_unspecified)
}

fn is_loopback<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ip_predicate(args, "isLoopback", Ip::is_loopback)
}

fn is_link_local_multicast<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ip_predicate(args, "isLinkLocalMulticast", Ip::is_link_local_multicast)
}

fn is_link_local_unicast<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ip_predicate(args, "isLinkLocalUnicast", Ip::is_link_local_unicast)
}

fn is_global_unicast<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ip_predicate(args, "isGlobalUnicast", Ip::is_global_unicast)
}

fn to_string<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let text = match value(&*args[0])? {
        Value::Opaque(o) => o
            .downcast_ref::<Ip>()
            .map(Ip::to_string)
            .or_else(|| o.downcast_ref::<Cidr>().map(Cidr::to_string)),
        _ => None,
    };
    match text {
        Some(t) => ret(Value::String(Arc::new(t))),
        None => Err(failure("string", "want ip or cidr".into())),
    }
}

fn cidr_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("cidr", &*args[0])?;
    let cidr = Cidr::parse(&s).map_err(|e| failure("cidr", e))?;
    ret(Value::Opaque(Arc::new(cidr)))
}

fn is_cidr<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("isCIDR", &*args[0])?;
    ret(Value::Bool(Cidr::parse(&s).is_ok()))
}

fn contains_ip<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let cidr = cidr_arg("containsIP", &*args[0])?;
    let ip = match value(&*args[1])? {
        Value::String(s) => Ip::parse(&s).map_err(|e| failure("containsIP", e))?,
        _ => ip_arg("containsIP", &*args[1])?,
    };
    ret(Value::Bool(cidr.contains_ip(&ip)))
}

fn contains_cidr<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let cidr = cidr_arg("containsCIDR", &*args[0])?;
    let other = match value(&*args[1])? {
        Value::String(s) => Cidr::parse(&s).map_err(|e| failure("containsCIDR", e))?,
        _ => cidr_arg("containsCIDR", &*args[1])?,
    };
    ret(Value::Bool(cidr.contains_cidr(&other)))
}

fn cidr_ip<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let cidr = cidr_arg("ip", &*args[0])?;
    ret(Value::Opaque(Arc::new(cidr.addr)))
}

fn masked<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let cidr = cidr_arg("masked", &*args[0])?;
    ret(Value::Opaque(Arc::new(cidr.masked())))
}

fn prefix_length<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let cidr = cidr_arg("prefixLength", &*args[0])?;
    ret(Value::Int(i64::from(cidr.bits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_go() {
        for (input, want) in [
            ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
            ("1:0:0:4:0:0:0:8", "1:0:0:4::8"),
            ("1:0:0:0:5:0:0:8", "1::5:0:0:8"),
            ("0:0:1:0:0:0:0:0", "0:0:1::"),
            ("::1.2.3.4", "::102:304"),
            ("::", "::"),
            ("1::", "1::"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ] {
            assert_eq!(
                Ip::parse(input).map(|i| i.to_string()),
                Ok(want.into()),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        for input in [
            "01.2.3.4",
            "1.2.3",
            "::ffff:1.2.3.4",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7",
            "1::2::3",
            "12345::1",
            "1:2:3:4:5:6:7:1.2.3.4",
            "",
        ] {
            assert!(Ip::parse(input).is_err(), "{input}");
        }
        for input in [
            "1.2.3.4/08",
            "1.2.3.4/+8",
            "1.2.3.4/33",
            "::ffff:1.2.3.0/120",
            "1.2.3.4",
        ] {
            assert!(Cidr::parse(input).is_err(), "{input}");
        }
    }

    #[test]
    fn containment() {
        let c = |s| Cidr::parse(s).unwrap();
        let ip = |s| Ip::parse(s).unwrap();
        assert!(c("10.1.2.3/8").contains_ip(&ip("10.0.0.0")));
        assert!(!c("0.0.0.0/0").contains_ip(&ip("::1")));
        assert!(c("10.0.0.0/8").contains_cidr(&c("10.1.0.0/16")));
        assert!(!c("10.0.0.0/8").contains_cidr(&c("0.0.0.0/0")));
        assert_eq!(
            c("2001:db8:ffff::1/33").masked().to_string(),
            "2001:db8:8000::/33"
        );
    }
}
