//! The invoice `contentHash`: SHA-256 over a canonical serialization of the
//! invoice's lines and totals.
//!
//! The canonical form is hand-written JSON, not serde output, so it cannot
//! change with a dependency's feature flags (e.g. serde_json's key order):
//! fixed field order, decimals normalized (`1.50` and `1.5` are both `1.5`,
//! `-0` is `0`), timestamps RFC 3339 in UTC with `Z` (fractional seconds
//! only when present), strings escaped as JSON, and lines sorted by their own
//! canonical text so input order does not matter.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::invoice::{Invoice, InvoiceLine};

/// Lowercase hex SHA-256 of [`canonical_form`].
pub fn content_hash(invoice: &Invoice) -> String {
    hex::encode(Sha256::digest(canonical_form(invoice).as_bytes()))
}

/// The exact text that [`content_hash`] hashes.
pub fn canonical_form(invoice: &Invoice) -> String {
    let mut lines: Vec<String> = invoice.lines.iter().map(canonical_line).collect();
    lines.sort();
    format!(
        "{{\"currency\":{},\"periodStart\":{},\"periodEnd\":{},\"subtotal\":{},\"total\":{},\"lines\":[{}]}}",
        string(invoice.currency.code()),
        timestamp(invoice.period_start),
        timestamp(invoice.period_end),
        decimal(invoice.subtotal),
        decimal(invoice.total),
        lines.join(","),
    )
}

fn canonical_line(line: &InvoiceLine) -> String {
    format!(
        "{{\"periodStart\":{},\"periodEnd\":{},\"kind\":{},\"priceId\":{},\"description\":{},\"quantity\":{},\"unitAmount\":{},\"amount\":{}}}",
        timestamp(line.period.start),
        timestamp(line.period.end),
        string(line.kind.as_str()),
        line.price_id
            .as_deref()
            .map_or_else(|| "null".to_string(), string),
        string(&line.description),
        decimal(line.quantity),
        line.unit_amount.map_or_else(|| "null".to_string(), decimal),
        decimal(line.amount),
    )
}

/// Decimals as JSON strings, normalized: no trailing zeros, no `-0`.
fn decimal(value: Decimal) -> String {
    format!("\"{}\"", value.normalize())
}

fn timestamp(value: DateTime<Utc>) -> String {
    format!("\"{}\"", value.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn string(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::LineKind;
    use crate::money::Currency;
    use crate::period::Period;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .expect("valid")
    }

    fn fixed_lines() -> Vec<InvoiceLine> {
        vec![
            InvoiceLine {
                kind: LineKind::Subscription,
                description: "1 × Pro".into(),
                price_id: Some("pro-monthly".into()),
                quantity: dec!(1),
                unit_amount: Some(dec!(150.00)),
                amount: dec!(150.00),
                period: Period::new(utc(2026, 2, 1), utc(2026, 3, 1)),
            },
            InvoiceLine {
                kind: LineKind::Usage,
                description: "API calls \"v2\"".into(),
                price_id: Some("api-calls".into()),
                quantity: dec!(15000),
                unit_amount: None,
                amount: dec!(600.00),
                period: Period::new(utc(2026, 1, 1), utc(2026, 2, 1)),
            },
            InvoiceLine {
                kind: LineKind::Proration,
                description: "Unused time on 1 × Basic (16/31 days)".into(),
                price_id: Some("basic-monthly".into()),
                quantity: dec!(1),
                unit_amount: Some(dec!(100)),
                amount: dec!(-51.61),
                period: Period::new(utc(2026, 1, 16), utc(2026, 2, 1)),
            },
            InvoiceLine {
                kind: LineKind::LateUsage,
                description: "Late usage: API calls".into(),
                price_id: None,
                quantity: dec!(0.000000000001),
                unit_amount: None,
                amount: dec!(0.10),
                period: Period::new(utc(2025, 12, 1), utc(2026, 1, 1)),
            },
        ]
    }

    fn invoice(lines: Vec<InvoiceLine>) -> Invoice {
        Invoice::from_lines(lines, Currency::parse("USD").expect("USD")).expect("invoice")
    }

    #[test]
    fn hash_is_pinned() {
        let invoice = invoice(fixed_lines());
        assert_eq!(invoice.subtotal, dec!(698.49));
        assert_eq!(
            canonical_form(&invoice),
            concat!(
                r#"{"currency":"USD","periodStart":"2025-12-01T00:00:00Z","periodEnd":"2026-03-01T00:00:00Z","subtotal":"698.49","total":"698.49","lines":["#,
                r#"{"periodStart":"2025-12-01T00:00:00Z","periodEnd":"2026-01-01T00:00:00Z","kind":"LATE_USAGE","priceId":null,"description":"Late usage: API calls","quantity":"0.000000000001","unitAmount":null,"amount":"0.1"},"#,
                r#"{"periodStart":"2026-01-01T00:00:00Z","periodEnd":"2026-02-01T00:00:00Z","kind":"USAGE","priceId":"api-calls","description":"API calls \"v2\"","quantity":"15000","unitAmount":null,"amount":"600"},"#,
                r#"{"periodStart":"2026-01-16T00:00:00Z","periodEnd":"2026-02-01T00:00:00Z","kind":"PRORATION","priceId":"basic-monthly","description":"Unused time on 1 × Basic (16/31 days)","quantity":"1","unitAmount":"100","amount":"-51.61"},"#,
                r#"{"periodStart":"2026-02-01T00:00:00Z","periodEnd":"2026-03-01T00:00:00Z","kind":"SUBSCRIPTION","priceId":"pro-monthly","description":"1 × Pro","quantity":"1","unitAmount":"150","amount":"150"}]}"#,
            )
        );
        assert_eq!(
            content_hash(&invoice),
            "4172a2cda8f25dff386c50bb1e494dff558a4f95ed24c5bcd25738faa45fed30"
        );
    }

    #[test]
    fn line_order_does_not_matter() {
        let mut reversed = fixed_lines();
        reversed.reverse();
        let mut rotated = fixed_lines();
        rotated.rotate_left(1);
        let expected = content_hash(&invoice(fixed_lines()));
        assert_eq!(content_hash(&invoice(reversed)), expected);
        assert_eq!(content_hash(&invoice(rotated)), expected);
    }

    #[test]
    fn decimal_scale_does_not_matter_but_values_do() {
        let mut rescaled = fixed_lines();
        rescaled[0].amount = dec!(150.0000);
        rescaled[0].quantity = dec!(1.000);
        rescaled[2].amount = dec!(-51.610);
        let expected = content_hash(&invoice(fixed_lines()));
        assert_eq!(content_hash(&invoice(rescaled)), expected);
        let mut changed = fixed_lines();
        changed[0].amount = dec!(150.01);
        assert_ne!(content_hash(&invoice(changed)), expected);
        assert_eq!(decimal(-Decimal::ZERO), "\"0\"");
    }
}
