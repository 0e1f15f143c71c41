//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers' annotations.

use serde::Serialize;
use utoipa::OpenApi;

/// Liveness body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always "healthy".
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
}

/// Readiness body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// ready | degraded | draining | unavailable
    pub status: String,
    /// One boolean per dependency: auth, reports, analytics, and redis when configured.
    /// Absent while draining.
    pub checks: Option<std::collections::BTreeMap<String, bool>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Incident reporting and budgeting API",
        description = "The REST contract of the mobile apps. Every error has one shape (ErrorBody); \
            every response carries X-Request-Id. Unknown query parameters and repeated parameters are refused. \
            Rate-limited responses carry RateLimit-Policy and RateLimit (IETF draft); a refusal is 429 \
            RATE_LIMIT_EXCEEDED with Retry-After. Every string of a JSON body has an upper bound (400 \
            VALIDATION_FAILED naming the field); a body larger than the limit is 413 PAYLOAD_TOO_LARGE, \
            and one that does not arrive in time is 408 REQUEST_TIMEOUT. Over HTTP/1.1, request headers \
            that do not arrive in time are 408 REQUEST_TIMEOUT, more than 96 headers 431 \
            HEADERS_TOO_LARGE, and bytes that are not HTTP 400 BAD_REQUEST, in the same shape. A path with a \
            percent-encoded unreserved character (a letter, a digit, `-`, `.`, `_`, `~`) or an empty segment \
            (`//`) is 400 BAD_REQUEST: each resource has one spelling. Every route is rate-limited (429) and \
            can answer 503 UNAVAILABLE with Retry-After when what it needs is down or slow. A write answered \
            503 may or may not have happened: retry it with the same Idempotency-Key, and for a registration \
            treat a 409 CONFLICT on the retry as success (log in). A request valid by this document is \
            accepted unless a rule no schema can state refuses it (a token that was never mailed, a password \
            that is too common, an account locked after failed logins), with 400, 401, 404, 409 or 423 and \
            its code.",
    ),
    paths(
        crate::routes::ops::health,
        crate::routes::ops::ready,
        crate::routes::ops::openapi,
        crate::routes::ops::status,
        crate::routes::jwks::jwks,
        crate::routes::alerts::nearby,
        crate::routes::reports::create,
        crate::routes::reports::list,
        crate::routes::reports::get,
        crate::routes::reports::update,
        crate::routes::reports::delete,
        crate::routes::reports::queue,
        crate::routes::reports::move_status,
        crate::routes::attachments::upload,
        crate::routes::attachments::download,
        crate::routes::auth::register,
        crate::routes::auth::login,
        crate::routes::auth::refresh,
        crate::routes::auth::logout,
        crate::routes::auth::logout_all,
        crate::routes::auth::verify_email,
        crate::routes::auth::password_reset,
        crate::routes::auth::password_reset_confirm,
        crate::routes::auth::me,
        crate::routes::auth::update_me,
        crate::routes::auth::change_password,
        crate::routes::auth::devices,
        crate::routes::auth::remove_device,
        crate::routes::auth::mfa_enroll,
        crate::routes::auth::mfa_confirm,
        crate::routes::auth::mfa_disable,
        crate::routes::auth::audit_logs,
    ),
    modifiers(&BearerAuth, &EdgeAnswers, &Links),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, crate::error::FieldIssue)),
    tags(
        (name = "operations", description = "Liveness, readiness, this document, maintenance windows"),
        (name = "auth", description = "Accounts and tokens (auth-service)"),
        (name = "reports", description = "Incident reports and alerts (reports-service)"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the protected routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The answers the edge can give on any route, before or around its handler (`edge`,
/// `rate_limit`, `body`, the `Authenticated` extractor): declared once here rather than on each
/// route, so that a new route cannot forget them. A route's own description of a status wins.
struct EdgeAnswers;

/// Every route: what the edge answers whatever the route.
const ANY_ROUTE: [(&str, &str); 5] = [
    (
        "400",
        "BAD_REQUEST (a path with a percent-encoded unreserved character or `//`), or \
         VALIDATION_FAILED naming the parameter or field at fault",
    ),
    ("408", "REQUEST_TIMEOUT: the request did not arrive in time"),
    ("429", "RATE_LIMIT_EXCEEDED, with Retry-After"),
    ("431", "HEADERS_TOO_LARGE"),
    (
        "503",
        "UNAVAILABLE, with Retry-After: a dependency is down or the request took too long. A write \
         may or may not have happened. Or MAINTENANCE during a maintenance window (announced on \
         GET /v1/status; never on /health, /ready, /v1/status, /openapi.json, /.well-known/jwks.json), \
         with the window's message and Retry-After the seconds until it ends",
    ),
];

/// Routes with a JSON body.
const WITH_BODY: [(&str, &str); 2] = [
    ("413", "PAYLOAD_TOO_LARGE"),
    ("415", "UNSUPPORTED_MEDIA_TYPE: send Content-Type: application/json"),
];

/// Routes that need a user.
const WITH_TOKEN: [(&str, &str); 1] = [(
    "401",
    "UNAUTHENTICATED, TOKEN_EXPIRED or TOKEN_REVOKED: log in or refresh",
)];

impl utoipa::Modify for EdgeAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::{Header, HeaderBuilder};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
        let error = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))))
                .build()
        };
        let header = |kind: Type, description: &str| -> Header {
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(kind))
                .description(Some(description))
                .build()
        };
        let request_id = || {
            header(
                Type::String,
                "The request's id (the client's when it sent a sane one); quote it to support",
            )
        };
        let retry_after = || header(Type::Integer, "Seconds to wait before trying again");
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let body = op.request_body.is_some();
                let token = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let answers = ANY_ROUTE
                    .iter()
                    .chain(WITH_BODY.iter().filter(|_| body))
                    .chain(WITH_TOKEN.iter().filter(|_| token));
                for (status, description) in answers {
                    op.responses.responses.entry((*status).to_owned()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(*description)
                            .content("application/json", error())
                            .into()
                    });
                }
                // Also on a status the route describes itself: the edge sets these headers.
                for (status, response) in &mut op.responses.responses {
                    if let RefOr::T(response) = response {
                        response.headers.insert("X-Request-Id".to_owned(), request_id());
                        if ["429", "503"].contains(&status.as_str()) {
                            response.headers.insert("Retry-After".to_owned(), retry_after());
                        }
                    }
                }
            }
        }
    }
}

/// OpenAPI links: which answer feeds which next request (an account's tokens, a listed device),
/// so that clients, and schemathesis' stateful phase, can follow a session from registration on.
///
/// Each link is defined once under `components/links` and referenced from the answers. utoipa
/// 5.5 writes its own `Link` type's members in snake case (`operation_id`), which no OpenAPI
/// reader knows, and has no `links` among its components; so the definitions are written as JSON
/// under that name through the components' extensions (one key, so the document's bytes do not
/// change from one start to the next).
struct Links;

/// The access token of a `SessionBody` (register, login), as the next request's header.
const SESSION_BEARER: &str = "Bearer {$response.body#/tokens/access_token}";

impl utoipa::Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use serde_json::json;
        use utoipa::openapi::{Ref, RefOr};
        let bearer = json!({"header.Authorization": SESSION_BEARER});
        let definitions = json!({
            "GetMe": {"operationId": "me", "parameters": bearer},
            "UpdateMe": {"operationId": "update_me", "parameters": bearer},
            "ListDevices": {"operationId": "devices", "parameters": bearer},
            "EnrollTotp": {"operationId": "mfa_enroll", "parameters": bearer},
            "LogoutAll": {"operationId": "logout_all", "parameters": bearer},
            "Logout": {
                "operationId": "logout",
                "parameters": bearer,
                "requestBody": {"refresh_token": "$response.body#/tokens/refresh_token"},
            },
            "Refresh": {
                "operationId": "refresh",
                "requestBody": {"refresh_token": "$response.body#/tokens/refresh_token"},
            },
            "LoginAsRegistered": {
                "operationId": "login",
                "requestBody": {"email": "$request.body#/email", "password": "$request.body#/password"},
            },
            "RemoveListedDevice": {
                "operationId": "remove_device",
                "parameters": {"path.device_id": "$response.body#/items/0/device_id"},
            },
            "GetReport": {"operationId": "get_report", "parameters": {"path.id": "$response.body#/id"}},
            "UpdateReport": {"operationId": "update_report", "parameters": {"path.id": "$response.body#/id"}},
            "DeleteReport": {"operationId": "delete_report", "parameters": {"path.id": "$response.body#/id"}},
            "GetListedReport": {
                "operationId": "get_report",
                "parameters": {"path.id": "$response.body#/items/0/id"},
            },
            "MoveQueuedReport": {
                "operationId": "move_report_status",
                "parameters": {"path.id": "$response.body#/items/0/report/id"},
            },
        });
        let session = [
            "GetMe",
            "UpdateMe",
            "ListDevices",
            "EnrollTotp",
            "Refresh",
            "Logout",
            "LogoutAll",
        ];
        let report = ["GetReport", "UpdateReport", "DeleteReport"];
        let uses: [(&str, &str, &[&str]); 8] = [
            ("/v1/auth/register", "201", &session),
            ("/v1/auth/register", "201", &["LoginAsRegistered"]),
            ("/v1/auth/login", "200", &session),
            ("/v1/auth/refresh", "200", &["Refresh"]),
            ("/v1/me/devices", "200", &["RemoveListedDevice"]),
            ("/v1/reports", "201", &report),
            ("/v1/reports", "200", &["GetListedReport"]),
            ("/v1/admin/reports", "200", &["MoveQueuedReport"]),
        ];
        for (path, status, names) in uses {
            // A path with both methods: a 201 is the POST's, a 200 the GET's.
            let response = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| match (status, item.post.is_some() && item.get.is_some()) {
                    ("200", true) => item.get.as_mut(),
                    _ => item.post.as_mut().or(item.get.as_mut()),
                })
                .and_then(|op| op.responses.responses.get_mut(status));
            if let Some(RefOr::T(response)) = response {
                for name in names {
                    let reference = Ref::new(format!("#/components/links/{name}"));
                    response.links.insert((*name).to_owned(), RefOr::Ref(reference));
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .extensions
            .get_or_insert_with(Default::default)
            .insert("links".to_owned(), definitions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).expect("serialises")
    }

    fn operations(doc: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
        let paths = doc["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .iter()
                    .map(move |(method, op)| (format!("{method} {path}"), op))
            })
            .collect()
    }

    #[test]
    fn every_route_documents_what_the_edge_can_answer() {
        let doc = document();
        for (name, op) in operations(&doc) {
            let statuses = op["responses"].as_object().expect("responses");
            for status in ["400", "408", "429", "431", "503"] {
                assert!(statuses.contains_key(status), "{name} lacks {status}");
            }
            if op.get("requestBody").is_some() {
                assert!(statuses.contains_key("413") && statuses.contains_key("415"), "{name}");
            }
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                assert!(statuses.contains_key("401"), "{name} needs a token but lacks 401");
            }
            assert!(!statuses.contains_key("500"), "{name}: a 500 is a bug, not a contract");
            for (status, response) in statuses {
                assert!(response["headers"]["X-Request-Id"].is_object(), "{name} {status}");
            }
            for status in ["429", "503"] {
                assert!(
                    statuses[status]["headers"]["Retry-After"].is_object(),
                    "{name} {status}"
                );
            }
        }
    }

    #[test]
    fn a_route_keeps_its_own_description_of_a_status() {
        let doc = document();
        let alerts = &doc["paths"]["/v1/alerts/nearby"]["get"]["responses"];
        assert_eq!(alerts["503"]["description"], "reports-service is unavailable");
    }

    #[test]
    fn links_use_the_specification_names_and_reach_real_operations() {
        let doc = document();
        let ids: Vec<&str> = operations(&doc)
            .iter()
            .filter_map(|(_, op)| op["operationId"].as_str())
            .collect();
        let definitions = doc["components"]["links"].as_object().expect("components/links");
        for (name, link) in definitions {
            let target = link["operationId"].as_str().unwrap_or_default();
            assert!(ids.contains(&target), "{name}: no operation {target:?}");
            for member in link.as_object().expect("link").keys() {
                assert!(
                    ["operationId", "parameters", "requestBody", "description"].contains(&member.as_str()),
                    "{name}: {member} is not a Link member"
                );
            }
        }
        let mut uses = 0;
        for (name, op) in operations(&doc) {
            for response in op["responses"].as_object().expect("responses").values() {
                for (link_name, link) in response["links"].as_object().into_iter().flatten() {
                    uses += 1;
                    let reference = link["$ref"].as_str().expect("a reference");
                    let target = reference.strip_prefix("#/components/links/").unwrap_or(reference);
                    assert!(definitions.contains_key(target), "{name} → {link_name}: {reference}");
                }
            }
        }
        assert!(uses >= 10, "only {uses} links");
    }

    #[test]
    fn the_document_is_the_same_bytes_every_time() {
        let first = ApiDoc::openapi().to_json().expect("json");
        for _ in 0..5 {
            assert_eq!(ApiDoc::openapi().to_json().expect("json"), first);
        }
    }

    #[test]
    fn the_description_says_what_a_503_means_for_a_write() {
        let doc = document();
        let text = doc["info"]["description"].as_str().expect("description");
        assert!(text.contains("may or may not have happened") && text.contains("409"));
        assert!(text.contains("`//`"));
    }
}
