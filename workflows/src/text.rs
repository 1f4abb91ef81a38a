//! Client text: how long it may be and how it is quoted back in errors.
//!
//! Every name, code and description a client stores has a length limit, so
//! a row, a list page or an invoice rendering stays a bounded size whatever
//! a client sends (the request body limit alone would allow 8 MiB names).
//! Limits count characters, not bytes, so every script gets the same room.

use crate::error::{WorkflowError, WorkflowResult};

/// Codes, external ids, names: what a person reads in a list.
pub const MAX_NAME_CHARS: usize = 200;
/// Free text shown on an invoice line.
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
/// An email address (RFC 5321 allows at most 254 octets in a path).
pub const MAX_EMAIL_CHARS: usize = 254;

/// How a client's text is quoted back in a message: at most 40 characters,
/// so a 1 MB string does not come back as a 1 MB message.
pub fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    match text.char_indices().nth(MAX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// `value` of `field` is not blank and has at most `max_chars` characters.
pub fn check_required(field: &str, value: &str, max_chars: usize) -> WorkflowResult<()> {
    if value.trim().is_empty() {
        return Err(WorkflowError::bad_input(format!(
            "{field} must not be empty"
        )));
    }
    check_length(field, value, max_chars)
}

/// `value` of `field` has at most `max_chars` characters.
pub fn check_length(field: &str, value: &str, max_chars: usize) -> WorkflowResult<()> {
    if value.chars().nth(max_chars).is_some() {
        return Err(WorkflowError::bad_input(format!(
            "{field} must be at most {max_chars} characters, got {}",
            value.chars().count()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_short() {
        assert_eq!(quoted("ü1"), "\"ü1\"");
        let long = "ü".repeat(50);
        assert_eq!(quoted(&long), format!("{:?}… (100 bytes)", "ü".repeat(40)));
        assert!(quoted(&"x".repeat(1 << 20)).len() < 80);
    }

    #[test]
    fn lengths_count_characters() {
        assert!(check_length("name", &"ü".repeat(200), 200).is_ok());
        let err = check_length("name", &"ü".repeat(201), 200).unwrap_err();
        assert_eq!(
            err.to_string(),
            "name must be at most 200 characters, got 201"
        );
        assert!(check_required("name", " \t", 200).is_err());
        assert!(check_required("name", "Acme", 200).is_ok());
    }
}
