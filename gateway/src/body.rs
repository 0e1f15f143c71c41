//! Request bodies: JSON whose every string has a length bound (checked at the edge, before a
//! service sees it), and a body that must arrive within `BODY_READ_TIMEOUT_MS`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>` field of a
/// PATCH body: absent is `None` (leave it), `null` is `Some(None)` (clear it), a value is
/// `Some(Some(v))`.
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A JSON body whose strings are within their bounds. Declared per body type, so the error names
/// the field.
pub trait Bounded {
    /// Each string field (`None` when absent) with its largest allowed length in characters.
    fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)>;
}

/// Refuses the first string over its bound with 400 `VALIDATION_FAILED` naming the field.
pub fn check(body: &impl Bounded) -> Result<(), ApiError> {
    for (field, value, max) in body.strings() {
        // Bytes first: a long string is refused without counting its characters.
        if let Some(v) = value
            && v.len() > max
            && v.chars().count() > max
        {
            return Err(ApiError::validation(
                field,
                &format!("must be at most {max} characters"),
            ));
        }
    }
    Ok(())
}

/// `web::Json<T>` (with the app's JSON configuration: size limit, unknown fields, errors in the
/// API's shape) whose strings are then checked against `T`'s bounds.
pub struct BoundedJson<T>(pub T);

impl<T> BoundedJson<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + Bounded + 'static> FromRequest for BoundedJson<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<Object<T>>::from_request(req, payload);
        Box::pin(async move {
            let body = json.await?.into_inner().0;
            check(&body)?;
            Ok(Self(body))
        })
    }
}

/// A JSON body the client may leave out: none at all (no `Content-Type`, no or a zero
/// `Content-Length`, no chunked body) is `None`; one that is sent must be valid like a
/// [`BoundedJson`], never silently taken for "no body" (a typo in `keep_current` must not end
/// every session).
pub struct OptionalJson<T>(pub Option<T>);

impl<T> OptionalJson<T> {
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

/// Whether the request carries a body, by its headers (what HTTP/1.1 and HTTP/2 both use to say so).
fn body_sent(req: &HttpRequest) -> bool {
    use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
    let headers = req.headers();
    headers.contains_key(CONTENT_TYPE)
        || headers.contains_key(TRANSFER_ENCODING)
        || headers.get(CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
}

impl<T: DeserializeOwned + Bounded + 'static> FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if !body_sent(req) {
            return Box::pin(std::future::ready(Ok(Self(None))));
        }
        let body = BoundedJson::<T>::from_request(req, payload);
        Box::pin(async move { Ok(Self(Some(body.await?.into_inner()))) })
    }
}

/// `T` from a JSON object only: serde's derive also reads a struct from an array of its fields
/// in order (`[null, null]`), which no client means and the contract does not allow.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData)).map(Object)
    }
}

/// The marker of a body read that ran out of time (an I/O error of this kind and message).
const BODY_TIMEOUT: &str = "request body not received in time";

/// Wraps a request's body so that reading it fails once `limit` has passed since the request
/// began: a client trickling its body a byte at a time is cut off.
pub fn with_read_deadline(payload: Payload, limit: Duration) -> Payload {
    let deadline = tokio::time::Instant::now() + limit;
    let stream = futures_util::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(payload))),
            Ok(None) => None,
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, BODY_TIMEOUT);
                // Ends the stream after the error.
                Some((Err(PayloadError::Io(e)), None))
            }
        }
    });
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

/// Whether a payload error is the read deadline of [`with_read_deadline`].
pub fn is_read_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut && io.to_string() == BODY_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Body {
        name: String,
        note: Option<String>,
    }

    impl Bounded for Body {
        fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
            vec![("name", Some(&self.name), 4), ("note", self.note.as_deref(), 2)]
        }
    }

    #[derive(serde::Deserialize, Debug)]
    struct Pair {
        first: Option<String>,
        second: Option<String>,
    }

    impl Bounded for Pair {
        fn strings(&self) -> Vec<(&'static str, Option<&str>, usize)> {
            vec![
                ("first", self.first.as_deref(), 4),
                ("second", self.second.as_deref(), 4),
            ]
        }
    }

    #[actix_web::test]
    async fn an_optional_body_is_none_only_when_nothing_is_sent() {
        use actix_web::test::TestRequest;
        let read = |request: TestRequest| async move {
            let (req, mut payload) = request.to_http_parts();
            OptionalJson::<Pair>::from_request(&req, &mut payload)
                .await
                .map(OptionalJson::into_inner)
        };
        assert!(read(TestRequest::post()).await.expect("no body").is_none());
        let json = || TestRequest::post().insert_header(("content-type", "application/json"));
        let sent = read(json().set_payload(r#"{"first": "a"}"#)).await.expect("a body");
        assert_eq!(sent.and_then(|p| p.first).as_deref(), Some("a"));
        for bad in ["{", "[1]", r#"{"first": "too long"}"#, ""] {
            assert!(
                read(json().set_payload(bad)).await.is_err(),
                "{bad:?} was taken for no body"
            );
        }
    }

    #[test]
    fn only_a_json_object_is_a_body() {
        let from = |json: &str| serde_json::from_str::<Object<Pair>>(json).map(|o| o.0);
        let pair = from(r#"{"first": "a"}"#).expect("an object");
        assert_eq!((pair.first.as_deref(), pair.second), (Some("a"), None));
        for not_an_object in ["[null, null]", r#"["a", "b"]"#, "null", "\"a\"", "1"] {
            assert!(from(not_an_object).is_err(), "{not_an_object} was read as a body");
        }
    }

    #[test]
    fn the_first_string_over_its_bound_is_named() {
        let ok = Body {
            name: "ääää".to_owned(),
            note: None,
        };
        assert!(
            check(&ok).is_ok(),
            "four characters are eight bytes but within four characters"
        );
        let long = Body {
            name: "abcd".to_owned(),
            note: Some("abc".to_owned()),
        };
        let e = check(&long).expect_err("too long");
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(e.details[0].field, "note");
        assert_eq!(e.details[0].issue, "must be at most 2 characters");
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_fails_with_the_marker() {
        // One chunk, then a client that goes quiet.
        let first = futures_util::stream::iter([Ok(web::Bytes::from_static(b"{\"a\":"))]);
        let quiet = first.chain(futures_util::stream::pending());
        let stalled = Payload::from(Box::pin(quiet) as std::pin::Pin<Box<dyn futures_util::Stream<Item = _>>>);
        let mut payload = with_read_deadline(stalled, Duration::from_millis(50));
        let first = payload.next().await.expect("chunk").expect("data");
        assert_eq!(&first[..], b"{\"a\":");
        let second = payload.next().await.expect("an error, not the end");
        assert!(second.is_err_and(|e| is_read_timeout(&e)));
        assert!(payload.next().await.is_none(), "nothing after the error");
    }
}
