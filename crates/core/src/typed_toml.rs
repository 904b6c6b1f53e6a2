//! TOML into typed structs, with errors that name the field: shared by the
//! rules language and the engine configuration.

use serde::de::DeserializeOwned;

/// What failed, and where: `field` is the dotted path (`effect.percnt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Deserializes `value`; on error, names the field at fault.
pub fn from_value<T: DeserializeOwned>(value: toml::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string().trim().to_string();
        // serde reports a missing key or unknown variant at its parent, an
        // unknown key at itself: name the key either way.
        let named_key = ["missing field `", "unknown field `", "unknown variant `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        let field = match (named_key, path.as_str()) {
            (Some(key), ".") => key.to_string(),
            (Some(key), p) if p == key || p.ends_with(&format!(".{key}")) => p.to_string(),
            (Some(key), parent) => format!("{parent}.{key}"),
            (None, path) => path.to_string(),
        };
        FieldError { field, message }
    })
}
