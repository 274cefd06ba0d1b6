"""Who may read and write a document: closed groups with roles and key rotation
(:mod:`secsync.access.group`), share links (:mod:`secsync.access.share`) and the broker's
per-document permission configs (:mod:`secsync.access.permissions`)."""
