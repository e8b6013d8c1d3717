"""Release identity of this build of the ReplyX backend (read by /health and /api/version)."""

RELEASE = "v1.0.0"
RELEASE_NAME = "stable"

# Feature flags of this release.
VERSIONED_WIDGETS = False         # assistants have a single widget generation in this release
DIALOG_LIST_LIMIT = 50            # default page size of GET /api/dialogs
