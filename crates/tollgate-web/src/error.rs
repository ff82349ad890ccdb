//! Service errors to HTTP, in one exhaustive mapping. Store failures are logged here and
//! answered with a fixed message: no internal detail leaves the process.

use tollgate_core::{ApiError, ErrorCode};
use tollgate_service::ServiceError;
use tollgate_store::StoreError;

pub(crate) fn api_error(e: ServiceError) -> ApiError {
    match e {
        ServiceError::Invalid { field, message } => {
            ApiError::invalid_request(format!("{field}: {message}")).with_param(field)
        }
        ServiceError::NotFound => ApiError::new(ErrorCode::NotFound, "No such object."),
        ServiceError::Forbidden(why) => ApiError::new(ErrorCode::Forbidden, format!("Not allowed: {why}.")),
        ServiceError::Internal(what) => {
            tracing::error!(error = what, "internal failure during a management call");
            ApiError::internal()
        }
        ServiceError::Conflict => ApiError::new(ErrorCode::Conflict, "An object with these values already exists."),
        ServiceError::Store(StoreError::Database(e)) => {
            tracing::error!(error = %e, "store failed during a management call");
            ApiError::new(ErrorCode::Unavailable, "The database is unavailable; try again shortly.")
        }
        ServiceError::Store(
            e @ (StoreError::Corrupt(_) | StoreError::UnsupportedUrl | StoreError::NotFound | StoreError::Conflict),
        ) => {
            tracing::error!(error = %e, "store failed during a management call");
            ApiError::internal()
        }
    }
}

/// Reads a JSON object body into `T`, answering 400 with serde's message (which names the
/// field) instead of axum's plain-text rejection. Every body of the API is an object:
/// serde would also fill a struct from an array of its fields in order (`["new name"]`
/// renaming a key), so anything but an object is refused before it is read.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(ApiError::invalid_request("Invalid JSON body: the body must be a JSON object."));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_request(format!("Invalid JSON body: {e}")))
}
