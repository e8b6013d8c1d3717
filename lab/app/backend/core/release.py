"""Release identity of this build of the ReplyX backend (read by /health and /api/version)."""

RELEASE = "v1.1.0"
RELEASE_NAME = "widget_version"

# Feature flags of this release.
VERSIONED_WIDGETS = True          # assistants carry a widget version (migration a1b2c3d4e5f6)
DIALOG_LIST_LIMIT = 50            # default page size of GET /api/dialogs
