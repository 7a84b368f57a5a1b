//! Inputs found by `fuzz/` (target `mime`), each checked for what that
//! target checks: a plan rewrites to a message that parses and has nothing
//! left to take out, or the rewrite refuses it as malformed (documents
//! never travel).

use super::*;

fn holds_promise(raw: &[u8]) {
    for inline_image_max in [0, DEFAULT_INLINE_IMAGE_MAX] {
        let opts = ExtractOptions { inline_image_max };
        let Ok(Scan::Extract(plan)) = scan(raw, &opts) else {
            continue;
        };
        let out = match rewrite(raw, &plan, &block_for(&plan.documents)) {
            Ok(out) => out,
            Err(ExtractError::Malformed) => continue,
            Err(e) => panic!("{e}"),
        };
        assert!(MessageParser::default().parse(&out).is_some());
        let again = scan(&out, &opts);
        assert!(
            matches!(again, Ok(Scan::Clean)),
            "left in: {again:?}\n{}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// mail-parser starts part 1's header right after the delimiter, on its
/// line, and finds the next delimiter in the middle of a line (`X------`).
/// Cutting part 1 from its header on joined the first delimiter with the
/// empty header block of part 2, so part 2's body line `Content-Type:\0`
/// became its header: an attachment again.
#[test]
fn part_header_on_the_delimiter_line() {
    holds_promise(
        b"content-Type:multipart;boundary=----\r\n\r\n------Content-Type:4\r\n\r\n\
          X------\r\n\r\nContent-Type:\0\r\n\r\n-",
    );
}

/// The outer delimiter `--b` also occurs in the middle of the line
/// `----bContent-Type:.`, which starts with the inner delimiter `----`.
/// mail-parser reads that line as an inner delimiter while the attachment
/// before it is there, and as an outer one (opening an attachment) once it
/// is cut: the rewrite must refuse the message.
#[test]
fn delimiter_inside_a_delimiter_line() {
    holds_promise(
        b"Content-Type:multipart;boundary=b\r\n\r\n--bContent-Type:multipart;boundary=--\r\n\r\n\
          ----\r\n\r\ne\r\n----Content-Type:.\r\n\r\n7\r\n----bContent-Type:.\r\n\r\n7",
    );
}
