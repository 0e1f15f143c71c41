//! Moderation rules: which status moves are allowed. Pure: domain values in and out.

use crate::domain::Status;

/// `submitted → under_review → resolved | dismissed`; anything else (backwards, skipping review,
/// leaving a final status, staying put) is refused.
pub fn allowed(from: Status, to: Status) -> bool {
    matches!(
        (from, to),
        (Status::Submitted, Status::UnderReview)
            | (Status::UnderReview, Status::Resolved)
            | (Status::UnderReview, Status::Dismissed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forward_moves_through_review_are_allowed() {
        let mut allowed_moves = Vec::new();
        for from in Status::ALL {
            for to in Status::ALL {
                if allowed(from, to) {
                    allowed_moves.push((from.as_str(), to.as_str()));
                }
            }
        }
        assert_eq!(
            allowed_moves,
            [
                ("submitted", "under_review"),
                ("under_review", "resolved"),
                ("under_review", "dismissed")
            ]
        );
    }
}
