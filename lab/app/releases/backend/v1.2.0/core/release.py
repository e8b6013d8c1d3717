"""Release identity of this build of the ReplyX backend (read by /health and /api/version)."""

RELEASE = "v1.2.0"
RELEASE_NAME = "dialog_insights"

# Feature flags of this release.
VERSIONED_WIDGETS = True          # assistants carry a widget version (migration a1b2c3d4e5f6)
DIALOG_LIST_LIMIT = 50            # default page size of GET /api/dialogs
DIALOG_INSIGHTS = True            # per-dialog insights (visitor activity, handoff SLA) in GET /api/dialogs
# Pause between insight queries so the insights backfill does not starve the read replica.
INSIGHTS_QUERY_PAUSE_S = 0.06
