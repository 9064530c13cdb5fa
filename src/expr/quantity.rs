//! Kubernetes' CEL quantity library: `quantity(s)`, `isQuantity(s)`, `sign(q)`, `q.isInteger()`,
//! `q.asInteger()`, `q.asApproximateFloat()`, `q.add(q|int)`, `q.sub(q|int)`, `q.compareTo(q)`,
//! `q.isGreaterThan(q)`, `q.isLessThan(q)` and `==`.
//!
//! A quantity is held the way apimachinery's `resource.Quantity` holds it, because several
//! answers depend on the representation and not only on the value: `quantity('1000m')` is no
//! integer there (its scale is negative), a 19-digit number is no integer either (it is kept as
//! a big decimal), and `asApproximateFloat` multiplies the stored mantissa by a power of ten. So
//! parsing, addition and the canonical form follow apimachinery step for step, with exact
//! integer arithmetic throughout.
//!
//! The big decimal of apimachinery is unbounded; here it is an `i128` mantissa, which holds any
//! value below about 1.7e29 at nano precision. A quantity beyond that is an error
//! ("quantity too large") where Kubernetes would still compute.

use std::cmp::Ordering;
use std::sync::Arc;

use cel::common::types::{DYN_TYPE, STRING_TYPE, Type};
use cel::objects::Opaque;
use cel::{DeclarationError, Env, ExecutionError, Value};
use thiserror::Error;

use super::library::{Args, Ret, ret, string_arg, value};

/// How a quantity prints, chosen by the suffix it was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `12e6`
    DecimalExponent,
    /// `12Mi`
    BinarySI,
    /// `12M`
    DecimalSI,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    FormatWrong,
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// retainer's limit, not Kubernetes': see the module documentation.
    #[error("quantity too large: beyond 128-bit precision at nano units")]
    TooLarge,
}

/// The two representations of apimachinery.
#[derive(Clone, Copy, Debug)]
enum Amount {
    /// `value × 10^scale` (apimachinery's int64Amount).
    Int { value: i64, scale: i32 },
    /// `unscaled × 10^-scale` (an inf.Dec: note the scale counts decimal places).
    Dec { unscaled: i128, scale: i32 },
}

#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    amount: Amount,
    format: Format,
}

/// `==` compares values, as `Quantity.Equal` does: `1k == 1000`, `1Ki != 1k`.
impl PartialEq for Quantity {
    fn eq(&self, other: &Quantity) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl Opaque for Quantity {
    fn runtime_type_name(&self) -> &str {
        TYPE_NAME
    }
}

pub const TYPE_NAME: &str = "kubernetes.Quantity";

/// Nano units: the finest precision a big decimal is rounded to.
const NANO_PLACES: i32 = 9;

fn pow10_i128(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// `x × 10^n`, or None past i128.
fn scale_up(x: i128, n: u32) -> Option<i128> {
    if x == 0 {
        return Some(0);
    }
    x.checked_mul(pow10_i128(n)?)
}

/// `x / 10^n` rounded away from zero, as inf's RoundUp; and whether it was exact.
fn div_round_up(x: i128, n: u32) -> (i128, bool) {
    let Some(d) = pow10_i128(n) else {
        // 10^n exceeds any mantissa: the quotient is 0 with x as remainder.
        return (x.signum(), x == 0);
    };
    let (q, r) = (x / d, x % d);
    if r == 0 {
        (q, true)
    } else {
        (q + x.signum(), false)
    }
}

/// The number of decimal digits of |x|, at least 1.
fn digits(x: u128) -> i64 {
    x.checked_ilog10().map_or(1, |d| i64::from(d) + 1)
}

/// Exact comparison of `a × 10^-sa` with `b × 10^-sb`, whatever their magnitudes.
fn cmp_dec(a: i128, sa: i32, b: i128, sb: i32) -> Ordering {
    match a.signum().cmp(&b.signum()) {
        Ordering::Equal if a == 0 => return Ordering::Equal,
        Ordering::Equal => {}
        other => return other,
    }
    let (ma, mb) = (a.unsigned_abs(), b.unsigned_abs());
    // The position of the leading digit decides unless it is the same; then aligning the
    // scales multiplies the shorter mantissa up to the other's length, which fits in u128.
    let lead = |m: u128, s: i32| digits(m) - i64::from(s);
    let magnitude = match lead(ma, sa).cmp(&lead(mb, sb)) {
        Ordering::Equal => {
            let (ma, mb) = match sa.cmp(&sb) {
                Ordering::Less => (ma * 10u128.pow(sb.abs_diff(sa)), mb),
                _ => (ma, mb * 10u128.pow(sa.abs_diff(sb))),
            };
            ma.cmp(&mb)
        }
        other => other,
    };
    if a < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

/// apimachinery's positiveScaleInt64: `base × 10^scale` within i64.
fn positive_scale_i64(base: i64, scale: i32) -> Option<i64> {
    let mut v = base;
    for _ in 0..scale {
        v = v.checked_mul(10)?;
    }
    Some(v)
}

impl Amount {
    fn is_zero(&self) -> bool {
        match *self {
            Amount::Int { value, .. } => value == 0,
            Amount::Dec { unscaled, .. } => unscaled == 0,
        }
    }

    fn sign(&self) -> i64 {
        match *self {
            Amount::Int { value, .. } => value.signum(),
            Amount::Dec { unscaled, .. } => unscaled.signum() as i64,
        }
    }

    /// As a big decimal (`AsDec`): exact.
    fn dec(&self) -> (i128, i32) {
        match *self {
            Amount::Int { value, scale } => (i128::from(value), -scale),
            Amount::Dec { unscaled, scale } => (unscaled, scale),
        }
    }
}

/// int64Amount.Add: false when the sum leaves i64, and the caller falls back to decimals.
fn int_add(a: (i64, i32), b: (i64, i32)) -> Option<(i64, i32)> {
    let ((av, as_), (bv, bs)) = (a, b);
    if bv == 0 {
        return Some(a);
    }
    if av == 0 {
        return Some(b);
    }
    match as_.cmp(&bs) {
        Ordering::Equal => Some((av.checked_add(bv)?, as_)),
        Ordering::Greater => Some((positive_scale_i64(av, as_ - bs)?.checked_add(bv)?, bs)),
        Ordering::Less => Some((av.checked_add(positive_scale_i64(bv, bs - as_)?)?, as_)),
    }
}

/// inf.Dec's Add and Sub: the scale of the result is the larger one.
fn dec_add(a: (i128, i32), b: (i128, i32)) -> Result<Amount, QuantityError> {
    let scale = a.1.max(b.1);
    let up = |(u, s): (i128, i32)| scale_up(u, scale.abs_diff(s)).ok_or(QuantityError::TooLarge);
    let unscaled = up(a)?.checked_add(up(b)?).ok_or(QuantityError::TooLarge)?;
    Ok(Amount::Dec { unscaled, scale })
}

/// The suffix after a number: its base, exponent and format.
fn interpret(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = |e| Some((10, e, Format::DecimalSI));
    let binary = |e| Some((2, e, Format::BinarySI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let rest = suffix.strip_prefix(['e', 'E'])?;
            // Go's strconv.ParseInt: an optional sign, then decimal digits, within int64;
            // the result is then truncated to int32 as apimachinery does.
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let parsed: i64 = rest.parse().ok()?;
            Some((10, parsed as i32, Format::DecimalExponent))
        }
    }
}

/// The pieces of apimachinery's parseQuantityString: sign, the numeric text (with its sign and
/// leading zeros), the integer and fraction digits (leading zeros gone), and the suffix.
struct Pieces<'a> {
    positive: bool,
    value: &'a str,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

fn split(s: &str) -> Result<Pieces<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut p = Pieces {
        positive: true,
        value: "",
        num: "",
        denom: "",
        suffix: "",
    };
    let mut pos = 0;
    match b.first() {
        Some(b'-') => {
            p.positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    // Leading zeros; a string of nothing else is zero.
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        p.num = "0";
        p.value = "0";
        return Ok(p);
    }
    let start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    p.num = &s[start..pos];
    if pos >= end {
        p.value = s;
        return Ok(p);
    }
    if p.num.is_empty() {
        p.num = "0";
    }
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        p.denom = &s[start..pos];
        if pos >= end {
            p.value = s;
            return Ok(p);
        }
    }
    p.value = &s[..pos];
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::FormatWrong);
    }
    p.suffix = &s[suffix_start..];
    Ok(p)
}

/// inf.Dec's SetString: an optional sign, digits with at most one point, at least one digit.
fn dec_from_str(s: &str) -> Result<(i128, i32), QuantityError> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return Err(QuantityError::Numeric);
    }
    let mut unscaled: i128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        unscaled = unscaled
            .checked_mul(10)
            .and_then(|u| u.checked_add(i128::from(c - b'0')))
            .ok_or(QuantityError::TooLarge)?;
    }
    let scale = i32::try_from(frac.len()).map_err(|_| QuantityError::TooLarge)?;
    Ok((if negative { -unscaled } else { unscaled }, scale))
}

impl Quantity {
    fn int(value: i64, scale: i32, format: Format) -> Quantity {
        Quantity {
            amount: Amount::Int { value, scale },
            format,
        }
    }

    /// `resource.ParseQuantity`.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::FormatWrong);
        }
        if s == "0" {
            return Ok(Quantity::int(0, 0, Format::DecimalSI));
        }
        let p = split(s)?;
        let (base, exponent, format) = interpret(p.suffix).ok_or(QuantityError::Suffix)?;
        // Digits an int64 can hold after the suffix is applied; below zero the big decimal
        // is used.
        let figures = (p.num.len() + p.denom.len()) as i64;
        let (mut scale, mantissa, precision) = match format {
            Format::DecimalExponent | Format::DecimalSI => (exponent, 1i64, 18 - figures),
            Format::BinarySI if exponent >= 0 && p.denom.is_empty() => {
                let e = i64::from(exponent);
                (
                    0,
                    1i64 << exponent,
                    15 - p.num.len() as i64 - e * 3 / 10 - 1,
                )
            }
            Format::BinarySI => (0, 1, -1),
        };
        if precision >= 0 {
            // int32 arithmetic, as in Go: an absurd exponent wraps there too.
            scale = scale.wrapping_sub(p.denom.len() as i32);
            if scale >= -NANO_PLACES {
                let shifted = format!("{}{}", p.num, p.denom);
                let value: i64 = shifted.parse().map_err(|_| QuantityError::Numeric)?;
                if let Some(result) = value.checked_mul(mantissa) {
                    let result = if p.positive { result } else { -result };
                    return Ok(Quantity::int(result, scale, format));
                }
            }
        }
        let (mut unscaled, mut dscale) = dec_from_str(p.value)?;
        if base == 10 {
            dscale = dscale
                .checked_sub(exponent)
                .ok_or(QuantityError::TooLarge)?;
        } else {
            // Past i128 a binary quantity is far beyond the cap applied below.
            unscaled = match unscaled.checked_mul(1i128 << exponent) {
                Some(u) => u,
                None if format == Format::BinarySI => return Ok(binary_cap(p.positive)),
                None => return Err(QuantityError::TooLarge),
            };
        }
        let negative = unscaled < 0;
        unscaled = unscaled.abs();
        if unscaled != 0 {
            // Rounded up to nano units: the scale becomes exactly 9.
            unscaled = if dscale <= NANO_PLACES {
                match scale_up(unscaled, NANO_PLACES.abs_diff(dscale)) {
                    Some(u) => u,
                    None if format == Format::BinarySI => return Ok(binary_cap(!negative)),
                    None => return Err(QuantityError::TooLarge),
                }
            } else {
                div_round_up(unscaled, dscale.abs_diff(NANO_PLACES)).0
            };
            dscale = NANO_PLACES;
        }
        let mut format = format;
        if format == Format::BinarySI
            && cmp_dec(unscaled, dscale, i128::from(i64::MAX), 0) == Ordering::Greater
        {
            (unscaled, dscale) = (i128::from(i64::MAX), 0);
        }
        if format == Format::BinarySI
            && unscaled != 0
            && cmp_dec(unscaled, dscale, 1, 0) == Ordering::Less
        {
            format = Format::DecimalSI;
        }
        if negative {
            unscaled = -unscaled;
        }
        Ok(Quantity {
            amount: Amount::Dec {
                unscaled,
                scale: dscale,
            },
            format,
        })
    }

    /// An int as `resource.NewQuantity(i, DecimalExponent)` makes it, for `add(int)`.
    pub fn from_int(i: i64) -> Quantity {
        Quantity::int(i, 0, Format::DecimalExponent)
    }

    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        let (a, sa) = self.amount.dec();
        let (b, sb) = other.amount.dec();
        cmp_dec(a, sa, b, sb)
    }

    pub fn sign(&self) -> i64 {
        self.amount.sign()
    }

    /// `Quantity.Add`: a zero receiver takes the other's format.
    pub fn add(&self, y: &Quantity) -> Result<Quantity, QuantityError> {
        let mut q = *self;
        if let (
            Amount::Int { value, scale },
            Amount::Int {
                value: yv,
                scale: ys,
            },
        ) = (self.amount, y.amount)
        {
            if value == 0 {
                q.format = y.format;
            }
            if let Some((value, scale)) = int_add((value, scale), (yv, ys)) {
                q.amount = Amount::Int { value, scale };
                return Ok(q);
            }
        } else if self.amount.is_zero() {
            q.format = y.format;
        }
        q.amount = dec_add(self.amount.dec(), y.amount.dec())?;
        Ok(q)
    }

    /// `Quantity.Sub`. The integer path negates with Go's wrapping, as apimachinery does.
    pub fn sub(&self, y: &Quantity) -> Result<Quantity, QuantityError> {
        let mut q = *self;
        if self.amount.is_zero() {
            q.format = y.format;
        }
        if let (
            Amount::Int { value, scale },
            Amount::Int {
                value: yv,
                scale: ys,
            },
        ) = (self.amount, y.amount)
            && let Some((value, scale)) = int_add((value, scale), (yv.wrapping_neg(), ys))
        {
            q.amount = Amount::Int { value, scale };
            return Ok(q);
        }
        let (u, s) = y.amount.dec();
        q.amount = dec_add(
            self.amount.dec(),
            (u.checked_neg().ok_or(QuantityError::TooLarge)?, s),
        )?;
        Ok(q)
    }

    /// `Quantity.AsInt64`: only the integer representation with a non-negative scale converts.
    pub fn as_i64(&self) -> Option<i64> {
        match self.amount {
            Amount::Dec { .. } => None,
            Amount::Int { value, scale } if scale >= 0 => positive_scale_i64(value, scale),
            Amount::Int { .. } => None,
        }
    }

    /// `Quantity.AsApproximateFloat64`: the stored mantissa times a power of ten.
    pub fn as_approximate_f64(&self) -> f64 {
        let (base, exponent) = match self.amount {
            Amount::Int { value, scale } => (value as f64, scale),
            Amount::Dec { unscaled, scale } => (unscaled as f64, -scale),
        };
        if exponent == 0 {
            base
        } else {
            base * go_pow10(exponent)
        }
    }

    /// `Quantity.String()` of a quantity whose text was not kept: its canonical form.
    pub fn canonical(&self) -> String {
        if self.amount.is_zero() {
            return "0".into();
        }
        let mut format = self.format;
        let mut rounded = None;
        if format == Format::BinarySI {
            let (u, s) = self.amount.dec();
            let small = cmp_dec(u, s, -1024, 0) == Ordering::Greater
                && cmp_dec(u, s, 1024, 0) == Ordering::Less;
            match self.integer_rounded_up() {
                Some((v, true)) if !small => rounded = Some(v),
                _ => format = Format::DecimalSI,
            }
        }
        match (format, rounded) {
            (Format::BinarySI, Some(v)) => {
                let (mut amount, mut times) = (v, 0);
                while amount.unsigned_abs() >= 1024 && amount % 1024 == 0 {
                    amount /= 1024;
                    times += 1;
                }
                format!("{amount}{}", binary_suffix(times * 10))
            }
            _ => {
                let (u, s) = self.amount.dec();
                let (mut amount, mut exponent) = (u, -i64::from(s));
                while amount % 10 == 0 {
                    amount /= 10;
                    exponent += 1;
                }
                // The exponent goes down to a multiple of three; the mantissa gains zeros.
                let pad = exponent.rem_euclid(3);
                exponent -= pad;
                let zeros = "0".repeat(pad as usize);
                format!("{amount}{zeros}{}", decimal_suffix(exponent, format))
            }
        }
    }

    /// The value rounded away from zero to an integer, and whether that was exact; None past
    /// i128.
    fn integer_rounded_up(&self) -> Option<(i128, bool)> {
        let (u, s) = self.amount.dec();
        if s <= 0 {
            scale_up(u, s.unsigned_abs()).map(|v| (v, true))
        } else {
            Some(div_round_up(u, s.unsigned_abs()))
        }
    }
}

/// A binary quantity above the largest int64 is that int64, as apimachinery caps it.
fn binary_cap(positive: bool) -> Quantity {
    let max = i128::from(i64::MAX);
    Quantity {
        amount: Amount::Dec {
            unscaled: if positive { max } else { -max },
            scale: 0,
        },
        format: Format::BinarySI,
    }
}

fn decimal_suffix(exponent: i64, format: Format) -> String {
    if format == Format::DecimalExponent {
        return if exponent == 0 {
            String::new()
        } else {
            format!("e{exponent}")
        };
    }
    // An exponent without a suffix prints none, as apimachinery's lookup does.
    match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => "",
    }
    .into()
}

fn binary_suffix(exponent: i32) -> &'static str {
    match exponent {
        10 => "Ki",
        20 => "Mi",
        30 => "Gi",
        40 => "Ti",
        50 => "Pi",
        60 => "Ei",
        _ => "",
    }
}

/// Go's `math.Pow10`: exact powers below 1e32 combined from two tables, so that the product
/// rounds as it does in Go (`10f64.powi` rounds differently).
fn go_pow10(n: i32) -> f64 {
    const SMALL: [f64; 32] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31,
    ];
    const POSITIVE: [f64; 10] = [
        1e0, 1e32, 1e64, 1e96, 1e128, 1e160, 1e192, 1e224, 1e256, 1e288,
    ];
    const NEGATIVE: [f64; 11] = [
        1e-0, 1e-32, 1e-64, 1e-96, 1e-128, 1e-160, 1e-192, 1e-224, 1e-256, 1e-288, 1e-320,
    ];
    if (0..=308).contains(&n) {
        let n = n as usize;
        return POSITIVE[n / 32] * SMALL[n % 32];
    }
    if (-323..=0).contains(&n) {
        let n = n.unsigned_abs() as usize;
        return NEGATIVE[n / 32] / SMALL[n % 32];
    }
    if n > 0 { f64::INFINITY } else { 0.0 }
}

// ---------------------------------------------------------------------------------------------
// The CEL functions.

/// Registered before the semver library: `compareTo`, `isGreaterThan` and `isLessThan` exist
/// for both, and the first overload whose types accept the arguments is called, so the
/// quantity ones, typed on the quantity receiver, must come before semver's, which accept any.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let q = || Type::new_opaque_type(TYPE_NAME);
    env.add_overload(
        "quantity",
        "string_to_quantity",
        vec![STRING_TYPE],
        quantity_of,
    )?;
    env.add_overload(
        "isQuantity",
        "is_quantity_string",
        vec![STRING_TYPE],
        is_quantity,
    )?;
    // Kubernetes declares `sign` as a global function only: `sign(q)`, not `q.sign()`.
    env.add_overload("sign", "quantity_sign", vec![DYN_TYPE], sign)?;
    env.add_member_overload(
        "isGreaterThan",
        "quantity_is_greater_than",
        q(),
        vec![DYN_TYPE],
        is_greater_than,
    )?;
    env.add_member_overload(
        "isLessThan",
        "quantity_is_less_than",
        q(),
        vec![DYN_TYPE],
        is_less_than,
    )?;
    env.add_member_overload(
        "compareTo",
        "quantity_compare_to",
        q(),
        vec![DYN_TYPE],
        compare_to,
    )?;
    env.add_member_overload(
        "asApproximateFloat",
        "quantity_get_float",
        DYN_TYPE,
        vec![],
        as_approximate_float,
    )?;
    env.add_member_overload(
        "asInteger",
        "quantity_get_int",
        DYN_TYPE,
        vec![],
        as_integer,
    )?;
    env.add_member_overload(
        "isInteger",
        "quantity_is_integer",
        DYN_TYPE,
        vec![],
        is_integer,
    )?;
    env.add_member_overload("add", "quantity_add", DYN_TYPE, vec![DYN_TYPE], add)?;
    env.add_member_overload("sub", "quantity_sub", DYN_TYPE, vec![DYN_TYPE], sub)?;
    Ok(())
}

fn failure(function: &str, e: QuantityError) -> ExecutionError {
    ExecutionError::function_error(function, e.to_string())
}

fn quantity_arg(
    function: &str,
    v: &dyn cel::common::value::Val,
) -> Result<Quantity, ExecutionError> {
    match value(v)? {
        Value::Opaque(o) => o.downcast_ref::<Quantity>().copied().ok_or_else(|| {
            ExecutionError::function_error(function, "want quantity, got another opaque value")
        }),
        other => Err(ExecutionError::function_error(
            function,
            format!(
                "want quantity, got {}; convert with quantity(s)",
                super::type_name(&other)
            ),
        )),
    }
}

fn quantity_value(q: Quantity) -> Value {
    Value::Opaque(Arc::new(q))
}

fn quantity_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("quantity", &*args[0])?;
    let q = Quantity::parse(&s).map_err(|e| failure("quantity", e))?;
    ret(quantity_value(q))
}

fn is_quantity<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("isQuantity", &*args[0])?;
    // A quantity only too large for retainer's arithmetic is still a quantity.
    let valid = !matches!(
        Quantity::parse(&s),
        Err(QuantityError::FormatWrong | QuantityError::Numeric | QuantityError::Suffix)
    );
    ret(Value::Bool(valid))
}

fn sign<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Int(quantity_arg("sign", &*args[0])?.sign()))
}

fn pair(
    function: &str,
    args: &[cel::common::value::CowVal<'_, '_>],
) -> Result<Ordering, ExecutionError> {
    let a = quantity_arg(function, &*args[0])?;
    let b = quantity_arg(function, &*args[1])?;
    Ok(a.cmp_value(&b))
}

fn is_greater_than<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Bool(
        pair("isGreaterThan", &args)? == Ordering::Greater,
    ))
}

fn is_less_than<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Bool(pair("isLessThan", &args)? == Ordering::Less))
}

fn compare_to<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Int(pair("compareTo", &args)? as i64))
}

fn as_approximate_float<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let q = quantity_arg("asApproximateFloat", &*args[0])?;
    ret(Value::Float(q.as_approximate_f64()))
}

fn as_integer<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let q = quantity_arg("asInteger", &*args[0])?;
    match q.as_i64() {
        Some(i) => ret(Value::Int(i)),
        None => Err(ExecutionError::function_error(
            "asInteger",
            "cannot convert value to integer",
        )),
    }
}

fn is_integer<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let q = quantity_arg("isInteger", &*args[0])?;
    ret(Value::Bool(q.as_i64().is_some()))
}

/// The operand of `add` and `sub`: a quantity, or an int read as `NewQuantity(i, DecimalExponent)`.
fn operand(function: &str, v: &dyn cel::common::value::Val) -> Result<Quantity, ExecutionError> {
    match value(v)? {
        Value::Int(i) => Ok(Quantity::from_int(i)),
        _ => quantity_arg(function, v),
    }
}

fn add<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let q = quantity_arg("add", &*args[0])?;
    let y = operand("add", &*args[1])?;
    ret(quantity_value(q.add(&y).map_err(|e| failure("add", e))?))
}

fn sub<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let q = quantity_arg("sub", &*args[0])?;
    let y = operand("sub", &*args[1])?;
    ret(quantity_value(q.sub(&y).map_err(|e| failure("sub", e))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("0", "0"),
            ("1Ki", "1Ki"),
            ("1024Ki", "1Mi"),
            ("1.5Gi", "1536Mi"),
            ("1.1Ki", "1126400m"),
            ("8Ei", "9223372036854775807"),
            ("1000E", "1"),
            ("1e100", "10e99"),
            ("1e-100", "1e-9"),
            ("1.5", "1500m"),
            ("1.23456789e5", "123456789e-3"),
            ("-0.1n", "-1n"),
            ("1.000000000000000000001", "1000000001n"),
            (".", "0"),
            ("-", "0"),
            ("Ki", "0"),
            ("1e4294967296", "1"),
        ] {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.canonical(), want, "{input}");
        }
    }

    #[test]
    fn refuses_what_apimachinery_refuses() {
        for (input, want) in [
            ("", QuantityError::FormatWrong),
            ("1K", QuantityError::Suffix),
            ("1e", QuantityError::Suffix),
            ("--1", QuantityError::Suffix),
            ("1 ", QuantityError::FormatWrong),
            ("1e3Ki", QuantityError::FormatWrong),
        ] {
            assert_eq!(Quantity::parse(input).err(), Some(want), "{input}");
        }
    }

    #[test]
    fn representation_decides_integer_and_float() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("1k").as_i64(), Some(1000));
        assert_eq!(q("1000m").as_i64(), None);
        assert_eq!(q("1234567890123456789").as_i64(), None);
        assert_eq!(q("0.3").as_approximate_f64(), 0.30000000000000004);
        assert_eq!(q("1e309").as_approximate_f64(), f64::INFINITY);
        let sum = q("9223372036854775807")
            .add(&Quantity::from_int(1))
            .unwrap();
        assert_eq!(sum.canonical(), "9223372036854775808");
        assert_eq!(sum.as_i64(), None);
    }

    #[test]
    fn compares_exactly_at_any_magnitude() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("1e100").cmp_value(&q("1e99")), Ordering::Greater);
        assert_eq!(q("1e-100").cmp_value(&q("0")), Ordering::Greater);
        assert_eq!(
            q("1e20").cmp_value(&q("100000000000000000000")),
            Ordering::Equal
        );
        assert_eq!(q("-1Gi").cmp_value(&q("-1G")), Ordering::Less);
        assert!(q("1k") == q("1000"));
    }
}
