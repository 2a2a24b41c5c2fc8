//! Bearer-token authentication, as a tower layer on the routes that need it.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::body::unauthorized;
use super::settings::ApiToken;

/// Lets the request through when it carries `Authorization: Bearer <token>`
/// (the scheme in any case), answers 401 otherwise. Used through
/// `axum::middleware::from_fn_with_state`, a tower layer.
pub(crate) async fn require_bearer(State(token): State<ApiToken>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, credentials) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
        });
    match given {
        Some(given) if token.matches(given.trim()) => next.run(request).await,
        _ => unauthorized(),
    }
}
