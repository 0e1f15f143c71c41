//! The filters against real images made by the `image` crate, with metadata put in by `img-parts`
//! (and read back by it as the oracle that it is gone).

use std::io::Cursor;

use img_parts::{Bytes, ImageEXIF as _, ImageICC as _};
use sha2::{Digest as _, Sha256};

use super::*;

const MAX: u64 = 10 * 1024 * 1024;

fn rules() -> Rules {
    Rules {
        allowed: FileType::ALL.to_vec(),
        max_size: MAX,
    }
}

/// Runs an upload through the inspector in pieces of `piece` bytes.
fn run(declared: &str, bytes: &[u8], piece: usize) -> Result<(Vec<u8>, Judged), Refusal> {
    let mut inspector = Inspector::new(rules(), declared, bytes.len() as u64)?;
    let mut out = Vec::new();
    for chunk in bytes.chunks(piece.max(1)) {
        out.extend(inspector.push(chunk)?);
    }
    let (last, judged) = inspector.finish()?;
    out.extend(last);
    assert_eq!(judged.size, out.len() as u64);
    assert_eq!(judged.sha256, hex(&Sha256::digest(&out)));
    Ok((out, judged))
}

/// Every piece size gives the same bytes (state machines across chunk boundaries).
fn run_all(declared: &str, bytes: &[u8]) -> Result<Vec<u8>, Refusal> {
    let (whole, _) = run(declared, bytes, bytes.len())?;
    for piece in [1, 2, 3, 7, 13, 64, 1000] {
        assert_eq!(run(declared, bytes, piece)?.0, whole, "piece {piece}");
    }
    Ok(whole)
}

fn picture() -> image::RgbImage {
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    })
}

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(picture())
        .write_to(&mut bytes, format)
        .expect("encode");
    bytes.into_inner()
}

fn pixels(bytes: &[u8]) -> Vec<u8> {
    image::load_from_memory(bytes).expect("decodes").to_rgba8().into_raw()
}

const EXIF: &[u8] = b"MM\x00\x2a\x00\x00\x00\x08GPSLatitude 52.5200 GPSLongitude 13.4050";
const ICC: &[u8] = b"fake ICC profile bytes, kept for colour";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_jpeg_loses_exif_xmp_and_comments_and_keeps_its_pixels_and_colour_profile() {
    let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(encoded(image::ImageFormat::Jpeg).into()).expect("jpeg");
    jpeg.set_exif(Some(Bytes::from_static(EXIF)));
    jpeg.set_icc_profile(Some(Bytes::from_static(ICC)));
    let segments = jpeg.segments_mut();
    let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPSAltitude</x:xmpmeta>";
    segments.insert(
        1,
        img_parts::jpeg::JpegSegment::new_with_contents(0xE1, Bytes::from_static(xmp)),
    );
    segments.insert(
        1,
        img_parts::jpeg::JpegSegment::new_with_contents(0xFE, Bytes::from_static(b"a comment")),
    );
    segments.insert(
        1,
        img_parts::jpeg::JpegSegment::new_with_contents(0xED, Bytes::from_static(b"Photoshop 3.0\0IPTC")),
    );
    let original = jpeg.encoder().bytes().to_vec();
    assert!(contains(&original, b"GPSLatitude") && contains(&original, b"GPSAltitude"));

    let stripped = run_all("image/jpeg", &original).expect("accepted");
    let oracle = img_parts::jpeg::Jpeg::from_bytes(stripped.clone().into()).expect("still a JPEG");
    assert_eq!(oracle.exif(), None);
    assert_eq!(oracle.icc_profile().as_deref(), Some(ICC), "colour profile kept");
    for marker in [0xE1, 0xED, 0xFE] {
        assert!(oracle.segment_by_marker(marker).is_none(), "marker {marker:x} left");
    }
    for text in [&b"GPS"[..], b"comment", b"IPTC", b"xmpmeta"] {
        assert!(!contains(&stripped, text));
    }
    assert_eq!(pixels(&stripped), pixels(&original), "same pixels");
    assert!(stripped.len() < original.len());

    // A JFXX extension (a whole thumbnail image) and a reserved marker (JPG5) go too: the file is
    // then the same as without them.
    let mut extra = img_parts::jpeg::Jpeg::from_bytes(original.clone().into()).expect("jpeg");
    extra.segments_mut().insert(
        1,
        img_parts::jpeg::JpegSegment::new_with_contents(0xE0, Bytes::from_static(b"JFXX\0\x10thumbnail")),
    );
    extra.segments_mut().insert(
        1,
        img_parts::jpeg::JpegSegment::new_with_contents(0xF5, Bytes::from_static(b"hidden payload")),
    );
    let with_extra = extra.encoder().bytes().to_vec();
    assert!(contains(&with_extra, b"thumbnail") && contains(&with_extra, b"hidden payload"));
    assert_eq!(run_all("image/jpeg", &with_extra).expect("accepted"), stripped);
}

#[test]
fn a_png_loses_text_time_and_exif_chunks_and_keeps_its_pixels() {
    let mut png = img_parts::png::Png::from_bytes(encoded(image::ImageFormat::Png).into()).expect("png");
    png.set_exif(Some(Bytes::from_static(EXIF)));
    let chunks = png.chunks_mut();
    for (kind, data) in [
        (*b"tEXt", &b"Comment\0GPS here"[..]),
        (*b"zTXt", b"Raw profile\0\0xx"),
        (*b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta/>"),
        (*b"tIME", b"\x07\xea\x0c\x06\x0c\x00\x00"),
        (*b"pHYs", b"\x00\x00\x0b\x13\x00\x00\x0b\x13\x01"),
    ] {
        chunks.insert(1, img_parts::png::PngChunk::new(kind, Bytes::copy_from_slice(data)));
    }
    let original = png.encoder().bytes().to_vec();

    let stripped = run_all("image/png", &original).expect("accepted");
    let oracle = img_parts::png::Png::from_bytes(stripped.clone().into()).expect("still a PNG");
    assert_eq!(oracle.exif(), None);
    for kind in [*b"tEXt", *b"zTXt", *b"iTXt", *b"tIME", *b"eXIf"] {
        assert!(oracle.chunk_by_type(kind).is_none(), "{kind:?} left");
    }
    assert!(oracle.chunk_by_type(*b"pHYs").is_some(), "physical size kept");
    assert!(!contains(&stripped, b"GPS"));
    assert_eq!(pixels(&stripped), pixels(&original));
}

/// `bytes` with `extra` put in just before the GIF trailer.
fn before_trailer(bytes: &[u8], extra: &[u8]) -> Vec<u8> {
    let (body, trailer) = bytes.split_at(bytes.len() - 1);
    assert_eq!(trailer, [0x3B]);
    [body, extra, trailer].concat()
}

#[test]
fn a_gif_loses_comments_and_xmp_and_keeps_its_pixels_and_looping() {
    let plain = encoded(image::ImageFormat::Gif);
    let comment = b"\x21\xFE\x0bGPS comment\x00";
    let xmp = b"\x21\xFF\x0bXMP DataXMP\x0a<GPS here>\x00";
    let looping = b"\x21\xFF\x0bNETSCAPE2.0\x03\x01\x00\x00\x00";
    let original = before_trailer(&plain, &[&comment[..], xmp, looping].concat());
    assert_eq!(
        pixels(&original),
        pixels(&plain),
        "the test's extensions are well formed"
    );

    let stripped = run_all("image/gif", &original).expect("accepted");
    assert!(!contains(&stripped, b"GPS") && !contains(&stripped, b"XMP"));
    assert!(contains(&stripped, b"NETSCAPE2.0"), "looping kept");
    assert_eq!(stripped, before_trailer(&plain, looping));
    assert_eq!(pixels(&stripped), pixels(&original));
}

const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

#[test]
fn a_pdf_passes_as_it_is_and_a_pdf_that_is_also_a_zip_does_not() {
    assert_eq!(run_all("application/pdf", PDF).expect("accepted"), PDF);
    for signature in [&b"PK\x03\x04"[..], b"PK\x05\x06", b"PK\x01\x02"] {
        let polyglot = [PDF, signature, b"rest of an archive"].concat();
        // Every split of the signature between two chunks is still seen.
        for piece in 1..=8 {
            assert_eq!(
                run("application/pdf", &polyglot, piece).map(|_| ()),
                Err(Refusal::Polyglot("a PDF that is also a ZIP archive")),
                "piece {piece}"
            );
        }
    }
}

#[test]
fn trailing_data_after_an_image_is_refused() {
    for (declared, format, why) in [
        ("image/jpeg", image::ImageFormat::Jpeg, "data after the JPEG end marker"),
        ("image/png", image::ImageFormat::Png, "data after the PNG IEND chunk"),
        ("image/gif", image::ImageFormat::Gif, "data after the GIF trailer"),
    ] {
        let bytes = [encoded(format), b"PK\x03\x04 a zip".to_vec()].concat();
        for piece in [1, 5, 4096] {
            assert_eq!(
                run(declared, &bytes, piece).map(|_| ()),
                Err(Refusal::Polyglot(why)),
                "{declared}"
            );
        }
    }
}

#[test]
fn the_type_is_judged_by_content_and_must_match_the_declared_one() {
    let png = encoded(image::ImageFormat::Png);
    assert_eq!(
        run("image/jpeg", &png, 100).map(|_| ()),
        Err(Refusal::TypeMismatch {
            declared: "image/jpeg".into(),
            sniffed: "image/png"
        })
    );
    assert_eq!(
        run("image/png; charset=x", &png, 100).map(|(_, j)| j.file_type),
        Ok(FileType::Png)
    );
    for declared in ["text/plain", "application/zip", "image/webp"] {
        assert!(
            matches!(run(declared, &png, 100), Err(Refusal::TypeNotAllowed { .. })),
            "{declared}"
        );
    }
    // Nothing declared (a multipart part without its own type): the content alone decides.
    for undeclared in ["", "application/octet-stream"] {
        assert_eq!(
            run(undeclared, &png, 100).map(|(_, j)| j.file_type),
            Ok(FileType::Png),
            "{undeclared:?}"
        );
        assert!(
            matches!(
                run(undeclared, b"PK\x03\x04 just a zip archive", 100),
                Err(Refusal::TypeNotAllowed { .. })
            ),
            "{undeclared:?}"
        );
    }
    // A file whose content is none of ours, declared as one of ours.
    assert!(matches!(
        run("image/png", b"PK\x03\x04 just a zip archive", 100),
        Err(Refusal::TypeNotAllowed { .. })
    ));
    // Short files are judged at the end.
    assert!(matches!(
        run("image/png", b"\x89PNG", 100),
        Err(Refusal::Malformed { .. })
    ));
    assert!(matches!(
        run("image/png", b"\x89", 100),
        Err(Refusal::TypeNotAllowed { .. })
    ));
    // A type the configuration does not allow.
    let only_pdf = Rules {
        allowed: vec![FileType::Pdf],
        max_size: MAX,
    };
    assert!(matches!(
        Inspector::new(only_pdf, "image/png", 0).map(|_| ()),
        Err(Refusal::TypeNotAllowed { .. })
    ));
}

#[test]
fn empty_oversized_and_mis_sized_bodies_are_refused() {
    assert_eq!(run("image/png", b"", 10).map(|_| ()), Err(Refusal::Empty));
    let small = Rules {
        allowed: FileType::ALL.to_vec(),
        max_size: 1000,
    };
    assert!(matches!(
        Inspector::new(small.clone(), "application/pdf", 1001).map(|_| ()),
        Err(Refusal::TooLarge { limit: 1000 })
    ));
    let mut inspector = Inspector::new(small, "application/pdf", 0).expect("no size declared");
    inspector.push(&[b'%'; 600]).expect_err("not a PDF");
    let mut inspector = Inspector::new(
        Rules {
            allowed: FileType::ALL.to_vec(),
            max_size: 1000,
        },
        "application/pdf",
        0,
    )
    .expect("inspector");
    inspector.push(&PDF.repeat(20)[..600]).expect("first 600");
    assert_eq!(inspector.push(&[b' '; 401]), Err(Refusal::TooLarge { limit: 1000 }));
    // More or fewer bytes than declared.
    let mut inspector = Inspector::new(rules(), "application/pdf", 10).expect("inspector");
    assert_eq!(inspector.push(PDF).map(|_| ()), Err(Refusal::SizeMismatch));
    let mut inspector = Inspector::new(rules(), "application/pdf", PDF.len() as u64 + 1).expect("inspector");
    inspector.push(PDF).expect("fewer so far");
    assert_eq!(inspector.finish().map(|_| ()), Err(Refusal::SizeMismatch));
}

#[test]
fn truncated_images_are_refused() {
    for (declared, format) in [
        ("image/jpeg", image::ImageFormat::Jpeg),
        ("image/png", image::ImageFormat::Png),
        ("image/gif", image::ImageFormat::Gif),
    ] {
        let bytes = encoded(format);
        let cut = &bytes[..bytes.len() - 1];
        assert!(
            matches!(run(declared, cut, 64), Err(Refusal::Malformed { .. })),
            "{declared}"
        );
    }
}

/// Fill bytes (0xFF) may stand before any marker, also the one that ends a scan; they carry
/// nothing and are dropped, wherever the chunks split them.
#[test]
fn fill_bytes_before_a_jpeg_marker_are_dropped() {
    let plain = encoded(image::ImageFormat::Jpeg);
    let (body, end) = plain.split_at(plain.len() - 2);
    assert_eq!(end, [0xFF, 0xD9]);
    let filled = [body, &[0xFF; 3], end].concat();
    assert_eq!(run_all("image/jpeg", &filled).expect("accepted"), plain);
}

/// A cut inside a header, a body passed through unread, a scan or the end marker's own chunk:
/// the file is refused wherever it stops short.
#[test]
fn an_image_cut_anywhere_is_refused() {
    use image::ImageFormat::{Gif, Jpeg, Png};
    for format in [Jpeg, Png, Gif] {
        let declared = format.to_mime_type();
        let bytes = encoded(format);
        let tail = bytes.len().saturating_sub(40)..bytes.len();
        let cuts = (SNIFF_LEN..bytes.len()).filter(|c| c % 37 == 0 || tail.contains(c));
        for cut in cuts {
            for piece in [5, 64] {
                assert!(
                    matches!(run(declared, &bytes[..cut], piece), Err(Refusal::Malformed { .. })),
                    "{declared} cut at {cut} of {}, pieces of {piece}",
                    bytes.len()
                );
            }
        }
    }
}

#[test]
fn file_names_are_plain_names() {
    for ok in ["", "photo.jpg", "IMG 0001 (2).JPG", "relevé.pdf", "a.b.c"] {
        assert_eq!(check_file_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "../etc/passwd",
        "/etc/passwd",
        "dir/file.png",
        "C:\\x.png",
        "..",
        ".",
        "a\0b",
        "a\nb",
    ] {
        assert_eq!(check_file_name(bad), Err(Refusal::FileName), "{bad:?}");
    }
    assert_eq!(check_file_name(&"a".repeat(256)), Err(Refusal::FileName));
}
