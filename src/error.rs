//! One error type for everything a client can be told, rendered as OpenAI-shaped JSON.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// Meridian's explanation (exclusions, attempts), under `error.meridian`.
    pub details: Option<Box<Value>>,
    /// For 405: the `Allow` header.
    pub allow: Option<&'static str>,
    /// What only the operator's log shows (an invalid policy's every error), never the caller.
    pub log_detail: Option<Box<String>>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        let kind = match status {
            401 => "authentication_error",
            403 | 451 => "permission_error",
            404 => "not_found_error",
            413 | 415 => "invalid_request_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            502..=504 => "upstream_error",
            _ => "server_error",
        };
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            details: None,
            allow: None,
            log_detail: None,
        }
    }

    /// Another type than the status gives (a 503 that no upstream caused is `server_error`).
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// The policy in force could not be loaded: callers get a generic 500, the log the errors
    /// (they quote the policy's own values).
    pub fn invalid_policy(errors: impl std::fmt::Display) -> Self {
        let mut e = ApiError::new(
            500,
            "invalid_policy",
            "This deployment's policy is invalid, so no request can be served. The operator finds every error in Meridian's log under this request id.",
        );
        e.log_detail = Some(Box::new(format!(
            "the configured policy is invalid:\n{errors}"
        )));
        e
    }

    pub fn with_param(mut self, param: Option<&'static str>) -> Self {
        self.param = param;
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn to_json(&self) -> Value {
        let mut e = json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        });
        if let (Some(d), Some(obj)) = (&self.details, e.as_object_mut()) {
            obj.insert("meridian".into(), (**d).clone());
        }
        json!({ "error": e })
    }

    pub fn body(&self) -> Vec<u8> {
        crate::json::to_vec(&self.to_json()).unwrap_or_else(|_| b"{\"error\":{}}".to_vec())
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(400, code, message)
    }
}
