//! Money: integer micro-USD everywhere, never floats. A decimal USD number exists only at
//! the edges (config files, JSON), converted here with an explicit precision rule.

use std::fmt;

/// An amount of money in millionths of a US dollar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MicroUsd(pub i64);

const MICROS_PER_USD: i64 = 1_000_000;
/// Larger than any budget or price anyone will configure, far from `i64` overflow.
const MAX_USD: f64 = 1e12;

impl MicroUsd {
    pub const ZERO: Self = Self(0);

    /// Converts a decimal USD amount from config or JSON. Rejects negative, non-finite and
    /// huge values, and amounts with more than six decimal places (which would be lost).
    pub fn from_usd(usd: f64) -> Result<Self, String> {
        if !usd.is_finite() || usd < 0.0 {
            return Err("must be a non-negative number".to_owned());
        }
        if usd > MAX_USD {
            return Err("is unreasonably large".to_owned());
        }
        let scaled = usd * MICROS_PER_USD as f64;
        let rounded = scaled.round();
        // The f64 of a 6-decimal amount lies within float noise of an integer; anything
        // further away carries precision we would silently drop.
        if (scaled - rounded).abs() > 1e-6 * scaled.abs().max(1.0) {
            return Err("has more than 6 decimal places (micro-USD is the unit)".to_owned());
        }
        #[expect(clippy::cast_possible_truncation, reason = "bounded by MAX_USD above")]
        Ok(Self(rounded as i64))
    }

    /// The amount as a JSON number of USD (display only; never computed with).
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_USD as f64
    }

    pub fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for MicroUsd {
    /// `$1.234567`: exact, six decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

impl serde::Serialize for MicroUsd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_usd_f64())
    }
}

/// `#[serde(with = "as_micros")]`: an exact integer of micro-USD, for storage formats.
pub mod as_micros {
    use super::MicroUsd;

    pub fn serialize<S: serde::Serializer>(v: &MicroUsd, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(v.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MicroUsd, D::Error> {
        <i64 as serde::Deserialize>::deserialize(d).map(MicroUsd)
    }
}

/// What a model costs. Token prices are micro-USD per million tokens, so one token costs
/// `price / 1e6` micro-USD and a request's cost is exact before its single rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pricing {
    pub input_per_mtok: MicroUsd,
    pub output_per_mtok: MicroUsd,
    pub per_image: MicroUsd,
}

impl Pricing {
    /// Cost of one request. Rule: token costs are summed exactly (in units of 1e-12 USD)
    /// and rounded once, half up, to the micro-USD; images add their whole price.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64, images: u64) -> MicroUsd {
        let pico = i128::from(prompt_tokens) * i128::from(self.input_per_mtok.0)
            + i128::from(completion_tokens) * i128::from(self.output_per_mtok.0);
        let micros = (pico + 500_000) / 1_000_000 + i128::from(images) * i128::from(self.per_image.0);
        MicroUsd(i64::try_from(micros).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_conversion_is_exact_or_refused() {
        assert_eq!(MicroUsd::from_usd(0.15), Ok(MicroUsd(150_000)));
        assert_eq!(MicroUsd::from_usd(0.6), Ok(MicroUsd(600_000)));
        assert_eq!(MicroUsd::from_usd(12.5), Ok(MicroUsd(12_500_000)));
        assert_eq!(MicroUsd::from_usd(0.000001), Ok(MicroUsd(1)));
        assert!(MicroUsd::from_usd(0.0000001).is_err());
        assert!(MicroUsd::from_usd(-1.0).is_err());
        assert!(MicroUsd::from_usd(f64::NAN).is_err());
        assert!(MicroUsd::from_usd(1e13).is_err());
    }

    #[test]
    fn display_is_exact() {
        assert_eq!(MicroUsd(1_234_567).to_string(), "$1.234567");
        assert_eq!(MicroUsd(5).to_string(), "$0.000005");
        assert_eq!(MicroUsd(-5).to_string(), "-$0.000005");
    }

    #[test]
    fn cost_rounds_once_half_up() {
        let p = Pricing {
            input_per_mtok: MicroUsd(150_000),
            output_per_mtok: MicroUsd(600_000),
            per_image: MicroUsd(40_000),
        };
        // 1000 * 0.15 + 500 * 0.6 = 150 + 300 micro-USD.
        assert_eq!(p.cost(1000, 500, 0), MicroUsd(450));
        // 3 * 0.15 + 0 = 0.45 -> 0; 4 * 0.15 = 0.6 -> 1; 10 * 0.15 = 1.5 -> 2.
        assert_eq!(p.cost(3, 0, 0), MicroUsd(0));
        assert_eq!(p.cost(4, 0, 0), MicroUsd(1));
        assert_eq!(p.cost(10, 0, 0), MicroUsd(2));
        assert_eq!(p.cost(0, 0, 2), MicroUsd(80_000));
        assert_eq!(p.cost(u64::MAX, u64::MAX, 0), MicroUsd(i64::MAX));
    }
}
