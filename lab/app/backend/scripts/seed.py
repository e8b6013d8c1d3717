#!/usr/bin/env python3
"""Seed the ReplyX lab database (DATABASE_URL from core.app_config) with realistic data.

    python3 scripts/seed.py --scale N        # N >= 1, default 1

Scale 1 is a few thousand rows (2,400 knowledge_embeddings); scale 100 is a few hundred MB, mostly
knowledge_embeddings vectors and dialog_messages. Bulk rows are generated server side with
generate_series, in one transaction. Idempotent: when the database already holds users it changes
nothing. Always creates test@example.com / testpass plus a few named users. The last line printed is a
JSON summary of row counts. Needs the schema at 7b2e4d6f8a10 or later (any release's head).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

import psycopg  # noqa: E402

from core.app_config import DATABASE_URL, redacted_url  # noqa: E402
from core.security import hash_password  # noqa: E402

TABLES = ["users", "assistants", "dialogs", "dialog_messages", "knowledge_embeddings",
          "balance_transactions", "ai_token_usage", "uploaded_files"]
NAMED_USERS = [  # email, password, first name, role, balance
    ("test@example.com", "testpass", "Test", "user", 1000),
    ("admin@example.com", "adminpass", "Admin", "admin", 0),
    ("demo@example.com", "demopass", "Demo", "user", 250),
    ("support@example.com", "supportpass", "Support", "operator", 0),
    ("billing@example.com", "billingpass", "Billing", "user", 75),
]
TEST_USER_DIALOGS = 60          # > DIALOG_LIST_LIMIT, so GET /api/dialogs returns a full page
SEED_LOCK = 745_201_337         # advisory lock: two seeders never interleave

PER_SCALE = {"users": 20, "dialogs": 200, "knowledge_embeddings": 600,
             "balance_transactions": 300, "ai_token_usage": 500}
# Fixed extra rows on top of PER_SCALE * scale. 1800 extra vectors make the hnsw cosine index cheaper
# than a sequential scan + sort for the plan's nearest-neighbour query already at scale 1 (the planner
# switches at about 1,700 rows of 384 dimensions).
BASE = {"knowledge_embeddings": 1800}


def rows(table: str, scale: int) -> int:
    return BASE.get(table, 0) + PER_SCALE[table] * scale

USER_LINES = [
    "Hello, I have a question about my subscription and the invoice I received this morning.",
    "How do I connect the chat widget to my website? The embed code does not show up.",
    "Can the assistant answer in Spanish and German as well as English?",
    "My balance went down faster than expected this week, can you explain the charges?",
    "Is it possible to hand the conversation over to a human operator?",
    "The bot keeps repeating the same answer about delivery times.",
    "What are your opening hours on public holidays?",
    "I uploaded a PDF with our price list, will the assistant use it right away?",
]
BOT_LINES = [
    "Sure! Your current plan renews on the first of the month; the invoice lists AI usage separately.",
    "Open Settings -> Widget, copy the snippet and paste it before the closing body tag of your page.",
    "Yes, the assistant detects the visitor's language automatically and answers in the same language.",
    "Charges come from AI token usage: longer knowledge-base answers use more tokens per message.",
    "Of course, I am transferring you to an operator now. Average waiting time is two minutes.",
    "Thanks for the feedback, I have refreshed the delivery information from the knowledge base.",
    "We are open from 9:00 to 18:00 on public holidays, and the assistant answers around the clock.",
    "Documents are indexed within a few minutes; you can check the status on the Knowledge page.",
]
CHUNKS = [
    "Delivery within the city takes one to two business days; regional delivery takes up to five days.",
    "Refunds are processed to the original payment method within ten business days of approval.",
    "The Pro plan includes 10,000 AI messages per month and priority operator handoff.",
    "To reset a password, use the Forgot password link on the login page and follow the email.",
    "The widget supports custom colours, a greeting message and an offline form for after-hours leads.",
    "Knowledge base documents can be PDF, DOCX, TXT or a website URL; large files are split into chunks.",
    "Operators can take over any dialog from the dashboard; the bot pauses until the dialog is released.",
    "API keys are rotated from Settings -> Security; old keys stop working after a 24 hour grace period.",
]


def sql_array(values: list[str]) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def counts(cur) -> dict[str, int]:
    out = {}
    for table in TABLES:
        cur.execute(f"SELECT count(*) FROM {table}")
        out[table] = cur.fetchone()[0]
    return out


def seed(cur, scale: int) -> None:
    cur.execute("SELECT setseed(0.42)")
    bulk_hash = hash_password("labuser", salt="replyx-lab-bulk")
    for email, password, first_name, role, balance in NAMED_USERS:
        cur.execute("INSERT INTO users (email, hashed_password, first_name, role, balance, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, now() - interval '120 days')",
                    (email, hash_password(password), first_name, role, balance))
    cur.execute("SELECT id FROM users WHERE email = 'test@example.com'")
    test_uid = cur.fetchone()[0]

    n_users = rows("users", scale)
    cur.execute(
        """INSERT INTO users (email, hashed_password, first_name, role, balance, is_active, created_at)
           SELECT format('user%%s@lab.replyx.invalid', lpad(g::text, 6, '0')), %s,
                  (ARRAY['Anna','Boris','Chen','Dana','Emil','Fatima','Giorgi','Hana'])[1 + g %% 8],
                  'user', round((random() * 500)::numeric, 2), g %% 17 <> 0,
                  now() - (random() * interval '365 days')
           FROM generate_series(1, %s) AS g""", (bulk_hash, n_users))

    # Assistants: 3 for the test user, 2 for every other user.
    cur.execute(
        """INSERT INTO assistants (user_id, name, system_prompt, is_active, created_at)
           SELECT u.id,
                  (ARRAY['Support bot','Sales assistant','FAQ helper'])[k],
                  'You are a helpful customer support assistant for ' || coalesce(u.first_name, 'our') || '''s shop.',
                  true, u.created_at + interval '1 day'
           FROM users u CROSS JOIN generate_series(1, 3) AS k
           WHERE k <= CASE WHEN u.id = %s THEN 3 ELSE 2 END
           ORDER BY u.id, k""", (test_uid,))

    # Dialogs: a full page for the test user, the rest spread over the other users' assistants.
    cur.execute(
        """INSERT INTO dialogs (user_id, assistant_id, guest_id, started_at, ended_at, auto_response,
                                first_response_time)
           SELECT a.user_id, a.id, 'guest-' || md5(g::text || a.id::text), t.started,
                  CASE WHEN g %% 5 = 0 THEN NULL ELSE t.started + interval '15 minutes' END,
                  (g %% 2), round((random() * 3)::numeric, 3)::float
           FROM generate_series(1, %s) AS g
           CROSS JOIN LATERAL (SELECT now() - (random() * interval '90 days') + g * interval '0 s' AS started) t
           JOIN LATERAL (SELECT id, user_id FROM assistants WHERE user_id = %s
                         ORDER BY id OFFSET (g %% 3) LIMIT 1) a ON true""",
        (TEST_USER_DIALOGS, test_uid))
    cur.execute(
        """WITH a AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(user_id ORDER BY id) AS uids
                      FROM assistants WHERE user_id <> %s)
           INSERT INTO dialogs (user_id, assistant_id, guest_id, started_at, ended_at, auto_response,
                                first_response_time)
           SELECT a.uids[p.i], a.ids[p.i], 'guest-' || md5(g::text), t.started,
                  CASE WHEN g %% 7 = 0 THEN NULL ELSE t.started + interval '20 minutes' END,
                  (g %% 2), round((random() * 3)::numeric, 3)::float
           FROM a, generate_series(1, %s) AS g
           CROSS JOIN LATERAL (SELECT 1 + floor(random() * cardinality(a.ids))::int + g * 0 AS i) p
           CROSS JOIN LATERAL (SELECT now() - (random() * interval '90 days') + g * interval '0 s' AS started) t""",
        (test_uid, rows("dialogs", scale)))

    # Messages: 2..22 per dialog (about 12 on average), alternating visitor / assistant.
    cur.execute(
        f"""INSERT INTO dialog_messages (dialog_id, sender, text, timestamp)
            SELECT d.id, CASE WHEN m % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   CASE WHEN m % 2 = 1 THEN ({sql_array(USER_LINES)})[1 + floor(random() * 8)::int]
                        ELSE ({sql_array(BOT_LINES)})[1 + floor(random() * 8)::int]
                             || ' ' || ({sql_array(CHUNKS)})[1 + floor(random() * 8)::int] END,
                   d.started_at + m * interval '40 seconds'
            FROM dialogs d
            CROSS JOIN LATERAL generate_series(1, 2 + (d.id * 7919) % 21) AS m""")

    # Knowledge base: 384-dimensional vectors, round robin over all assistants. Inserting row by row
    # into hnsw graphs is the slow part of a big seed, so the hnsw indexes are dropped and rebuilt from
    # their own definitions inside this transaction: the schema ends exactly as the migrations left it.
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = 'knowledge_embeddings' AND indexdef LIKE '%%USING hnsw%%' ORDER BY indexname")
    hnsw = cur.fetchall()
    for name, _definition in hnsw:
        cur.execute(f'DROP INDEX "{name}"')
    cur.execute(
        f"""WITH a AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(user_id ORDER BY id) AS uids
                       FROM assistants)
            INSERT INTO knowledge_embeddings (user_id, assistant_id, doc_id, chunk_index, chunk_text, embedding,
                                              doc_type, importance, token_count, created_at)
            SELECT a.uids[1 + g %% cardinality(a.ids)], a.ids[1 + g %% cardinality(a.ids)],
                   1 + g / 8, g %% 8,
                   ({sql_array(CHUNKS)})[1 + g %% 8] || ' (section ' || g || ')',
                   (SELECT array_agg(random()::real) FROM generate_series(1, 384) AS x WHERE g >= 0)::vector(384),
                   (ARRAY['document','faq','website','instruction'])[1 + g %% 4],
                   1 + floor(random() * 10)::int, 20 + floor(random() * 200)::int,
                   now() - (random() * interval '60 days')
            FROM a, generate_series(0, %s - 1) AS g""", (rows("knowledge_embeddings", scale),))
    cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
    for _name, definition in hnsw:
        cur.execute(definition)

    cur.execute(
        """WITH u AS (SELECT array_agg(id ORDER BY id) AS ids FROM users)
           INSERT INTO balance_transactions (user_id, amount, transaction_type, description, balance_before,
                                             balance_after, related_id, created_at)
           SELECT u.ids[1 + g %% cardinality(u.ids)], v.amount, v.kind, initcap(v.kind) || ' #' || g,
                  v.before, v.before + v.amount, CASE WHEN v.kind = 'ai_usage' THEN g END,
                  now() - (random() * interval '90 days')
           FROM u, generate_series(1, %s) AS g
           CROSS JOIN LATERAL (
               SELECT (ARRAY['topup','ai_usage','ai_usage','ai_usage','refund','subscription'])[1 + g %% 6] AS kind,
                      round((random() * 1000)::numeric, 2) AS before,
                      CASE WHEN g %% 6 IN (0, 4) THEN round((random() * 100 + 5)::numeric, 2)
                           ELSE -round((random() * 20 + 0.1)::numeric, 2) END AS amount) v""",
        (rows("balance_transactions", scale),))

    cur.execute(
        """WITH a AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(user_id ORDER BY id) AS uids
                      FROM assistants)
           INSERT INTO ai_token_usage (user_id, assistant_id, model_name, prompt_tokens, completion_tokens,
                                       total_tokens, created_at)
           SELECT a.uids[1 + g %% cardinality(a.ids)], a.ids[1 + g %% cardinality(a.ids)],
                  (ARRAY['gpt-4o-mini','gpt-4o','claude-3-haiku'])[1 + g %% 3], t.p, t.c, t.p + t.c,
                  now() - (random() * interval '90 days')
           FROM a, generate_series(1, %s) AS g
           CROSS JOIN LATERAL (SELECT 50 + floor(random() * 1500)::int + g * 0 AS p,
                                      20 + floor(random() * 600)::int AS c) t""",
        (rows("ai_token_usage", scale),))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Seed the ReplyX lab database.")
    parser.add_argument("--scale", type=int, default=1, help="data volume multiplier (>= 1, default 1)")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be >= 1")
    started = time.monotonic()
    print(f"seeding {redacted_url(DATABASE_URL)} at scale {args.scale}", flush=True)
    with psycopg.connect(DATABASE_URL, connect_timeout=10) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SEED_LOCK,))
            cur.execute("SELECT count(*) FROM users")
            if cur.fetchone()[0] > 0:
                summary = counts(cur)
                print("database already has data: nothing changed", flush=True)
                print(json.dumps({"seeded": False, "scale": args.scale, "counts": summary}))
                return 0
            seed(cur, args.scale)
            summary = counts(cur)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    print(f"seeded in {time.monotonic() - started:.1f}s", flush=True)
    print(json.dumps({"seeded": True, "scale": args.scale, "counts": summary,
                      "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
