# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ReplyX platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed approvals: an approval is an SSH signature (``ssh-keygen -Y sign -n replyx-rollback``) over the plan's digest.

Two halves:

* ``check_signature_files`` reads the signature files and asks ``ssh-keygen`` (argv, never a shell) which
  principal of the inventory's ``allowed_signers`` file owns the signing key (``-Y find-principals``) and whether the
  signature is good for that principal, the namespace and the plan's digest (``-Y verify``). It returns one plain
  dict per file and decides nothing.
* ``signed_approvals`` (pure) turns those dicts into approvals ``{name, role, ticket, key, signature}`` or refuses:
  a malformed file, another namespace, a key no principal of allowed_signers has, a key listed for several
  principals, a signature over another digest, a principal without a role in ``rollback_signer_roles``, and the same
  key or principal twice (one person is one approver).

The message signed is the digest (64 hex digits), with or without a final newline: what
``replyx-rollback approve --digest D`` and ``echo D > plan.digest`` both sign.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import os
import re
import struct
import subprocess

from ansible_collections.replyx.rollback.plugins.module_utils._policy import PolicyError

NAMESPACE = "replyx-rollback"
_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"
_DIGEST = re.compile(r"^[0-9a-f]{64}\Z")
# bigger than any real signature (an RSA-16384 one is about 5 kB): a larger file is not a signature
_MAX_SIGNATURE_BYTES = 65536

HOW_TO_SIGN = ("Each approver signs the plan's digest with their own SSH key: `replyx-rollback approve --digest <digest> "
               "--key ~/.ssh/id_ed25519 -o <name>.sig` (or `ssh-keygen -Y sign -n %s -f <key> <file holding the "
               "digest>`); pass the files with -e approval_signatures=a.sig,b.sig (replyx-rollback run ... --signature "
               "a.sig --signature b.sig). `replyx-rollback plan ...` or --check prints the digest." % NAMESPACE)


# ------------------------------------------------------------------------------------------- the file

def _take_string(blob, offset):
    if offset + 4 > len(blob):
        raise ValueError("truncated")
    (size,) = struct.unpack(">I", blob[offset:offset + 4])
    offset += 4
    if offset + size > len(blob):
        raise ValueError("truncated")
    return blob[offset:offset + size], offset + size


def parse_signature(text):
    """The fields of an armored SSHSIG signature (PROTOCOL.sshsig): ``{namespace, fingerprint, key_type,
    hash_algorithm}``. Raises ValueError naming what is wrong with it."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not an SSH signature (binary content; expected the text ssh-keygen -Y sign writes, "
                             "starting with %s)" % _ARMOR_BEGIN)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 3 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise ValueError("not an SSH signature (expected the text ssh-keygen -Y sign writes, between %s and %s)"
                         % (_ARMOR_BEGIN, _ARMOR_END))
    try:
        blob = base64.b64decode("".join(lines[1:-1]).encode("ascii"), validate=True)
    except (ValueError, TypeError):
        raise ValueError("the signature's base64 is damaged")
    if blob[:6] != b"SSHSIG":
        raise ValueError("the signature does not start with the SSHSIG magic")
    try:
        if len(blob) < 10:
            raise ValueError("truncated")
        (version,) = struct.unpack(">I", blob[6:10])
        public_key, offset = _take_string(blob, 10)
        namespace, offset = _take_string(blob, offset)
        dummy, offset = _take_string(blob, offset)  # reserved
        hash_algorithm, offset = _take_string(blob, offset)
        signature, offset = _take_string(blob, offset)
        key_type, dummy = _take_string(public_key, 0)
    except ValueError:
        raise ValueError("the signature is truncated")
    if version != 1:
        raise ValueError("SSHSIG version %d is not supported (ssh-keygen writes version 1)" % version)
    if not signature:
        raise ValueError("the signature is empty")
    fingerprint = fingerprint_of(public_key)
    return {"namespace": namespace.decode("utf-8", "replace"), "fingerprint": fingerprint,
            "key_type": key_type.decode("ascii", "replace"), "hash_algorithm": hash_algorithm.decode("ascii", "replace")}


def signature_paths(value):
    """``approval_signatures`` as a list of files: a list or comma-separated paths; a directory stands for its
    ``*.sig`` files (sorted). Nothing else is read."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value if str(v).strip()]
    else:
        raise PolicyError("approval_signatures must be a list of signature files, a comma-separated string or a "
                          "directory of .sig files (got %r)" % (value,))
    out = []
    for item in items:
        path = os.path.expanduser(item)
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".sig"))
            if not found:
                raise PolicyError("approval_signatures: the directory %s holds no .sig file" % item, HOW_TO_SIGN)
            out.extend(found)
        else:
            out.append(path)
    return out


def fingerprint_of(blob):
    """OpenSSH's SHA256 fingerprint of a public key blob (what ``ssh-keygen -l`` prints)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def allowed_signers_principals(text):
    """Key fingerprint -> the principals an allowed_signers file lists it for (``principals [options] keytype key``;
    principals comma-separated, comments and blank lines skipped). Only to refuse a key listed for several
    principals: ``ssh-keygen -Y find-principals`` names the first one only. Lines it cannot read are skipped
    (ssh-keygen decides about them)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # words, a quoted option value ("a b") kept whole; the comment after the key may hold anything
        tokens = _WORD.findall(line)
        for i in range(1, len(tokens) - 1):
            if _KEY_TYPE.match(tokens[i]):
                try:
                    blob = base64.b64decode(tokens[i + 1].encode("ascii"), validate=True)
                except (ValueError, TypeError, UnicodeEncodeError):
                    break
                names = out.setdefault(fingerprint_of(blob), [])
                for name in tokens[0].split(","):
                    if name and name not in names:
                        names.append(name)
                break
    return out


_WORD = re.compile(r'(?:[^\s"]|"[^"]*")+')
_KEY_TYPE = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9-]+@openssh\.com)(-cert-v01@openssh\.com)?\Z")


# ---------------------------------------------------------------------------------------- ssh-keygen

def _run(argv, stdin=b"", timeout=30):
    try:
        proc = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              check=False)
    except OSError as exc:
        raise PolicyError("cannot run %s (%s): signed approvals are checked with OpenSSH's ssh-keygen (8.2 or later) "
                          "on the controller" % (argv[0], exc.strerror or exc))
    except subprocess.TimeoutExpired:
        raise PolicyError("%s %s did not answer within %d s" % (argv[0], " ".join(argv[1:3]), timeout))
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def check_signature_files(paths, digest, allowed_signers, ssh_keygen="ssh-keygen"):
    """One dict per file: ``{file, readable, problem, namespace, fingerprint, key_type, principals, verified,
    output}``. ``verified`` is true when ``ssh-keygen -Y verify`` accepts the signature for the (single) principal
    found, namespace ``replyx-rollback`` and the digest as the message."""
    if not allowed_signers:
        raise PolicyError("signed approvals were given but the inventory names no allowed_signers file "
                          "(rollback_allowed_signers)", "Set rollback_allowed_signers (a path on the controller) and "
                          "rollback_signer_roles (principal -> role) in the inventory.")
    if not os.path.isfile(allowed_signers):
        raise PolicyError("the allowed_signers file %s (rollback_allowed_signers) does not exist on the controller"
                          % allowed_signers)
    try:
        with open(allowed_signers, "rb") as handle:
            listed = allowed_signers_principals(handle.read().decode("utf-8", "replace"))
    except (IOError, OSError) as exc:
        raise PolicyError("cannot read the allowed_signers file %s (%s)" % (allowed_signers, exc.strerror or exc))
    out = []
    for path in paths:
        item = {"file": path, "readable": False, "problem": "", "namespace": "", "fingerprint": "", "key_type": "",
                "principals": [], "verified": False, "output": ""}
        out.append(item)
        try:
            with open(path, "rb") as handle:
                data = handle.read(_MAX_SIGNATURE_BYTES + 1)
        except (IOError, OSError) as exc:
            item["problem"] = "cannot read it (%s)" % (exc.strerror or exc)
            continue
        if len(data) > _MAX_SIGNATURE_BYTES:
            item["problem"] = "not an SSH signature (larger than %d bytes)" % _MAX_SIGNATURE_BYTES
            continue
        try:
            item.update(parse_signature(data))
        except ValueError as exc:
            item["problem"] = str(exc)
            continue
        item["readable"] = True
        if item["namespace"] != NAMESPACE:
            continue
        rc, stdout, stderr = _run([ssh_keygen, "-Y", "find-principals", "-f", allowed_signers, "-s", path])
        item["principals"] = [p.strip() for p in stdout.splitlines() if p.strip()] if rc == 0 else []
        if item["principals"]:
            # the same key under another principal too: one key, several "people"
            item["principals"] += [p for p in listed.get(item["fingerprint"], []) if p not in item["principals"]]
        if len(item["principals"]) != 1 or not _DIGEST.match(digest or ""):
            continue
        for message in ((digest + "\n").encode("ascii"), digest.encode("ascii")):
            rc, stdout, stderr = _run([ssh_keygen, "-Y", "verify", "-f", allowed_signers, "-I", item["principals"][0],
                                       "-n", NAMESPACE, "-s", path], stdin=message)
            item["output"] = (stdout + stderr).strip()
            if rc == 0:
                item["verified"] = True
                break
    return out


# ---------------------------------------------------------------------------------------- the decision

def signed_approvals(checked, digest, signer_roles, roles, ticket="", allowed_signers="allowed_signers"):
    """The approvals the checked signature files give (pure), or a PolicyError naming the first problem.

    ``checked``: ``check_signature_files``' dicts; ``signer_roles``: principal -> role (the inventory's
    ``rollback_signer_roles``); ``roles``: the valid roles (the role rank's keys)."""
    signer_roles = dict((str(k), str(v).strip().lower()) for k, v in (signer_roles or {}).items())
    out = []
    by_key = {}
    by_principal = {}
    for item in checked:
        name = os.path.basename(item["file"])
        where = "signature %s" % item["file"]
        if not item.get("readable"):
            raise PolicyError("%s is not a usable signature: %s" % (where, item.get("problem") or "unreadable"),
                              HOW_TO_SIGN)
        if item["namespace"] != NAMESPACE:
            raise PolicyError("%s was made for namespace %r, not %r (a signature made for git or another tool does "
                              "not approve a rollback)" % (where, item["namespace"], NAMESPACE), HOW_TO_SIGN)
        if not item["principals"]:
            raise PolicyError("%s is signed by the key %s, which no principal of %s has (an unknown key)"
                              % (where, item["fingerprint"], allowed_signers),
                              "Add the approver's public key to the allowed_signers file (and their role to "
                              "rollback_signer_roles), or have a listed approver sign.")
        if len(item["principals"]) > 1:
            raise PolicyError("%s is signed by the key %s, which %s lists for several principals (%s): one key is one "
                              "person" % (where, item["fingerprint"], allowed_signers, ", ".join(item["principals"])),
                              "Give each approver their own key in allowed_signers.")
        principal = item["principals"][0]
        if not item["verified"]:
            raise PolicyError("%s (by %s, key %s) does not sign this plan: it is not a good signature over digest %s "
                              "(it was made for another plan, or the plan changed since it was signed)"
                              % (where, principal, item["fingerprint"], digest),
                              "Ask %s to sign digest %s again." % (principal, digest))
        role = signer_roles.get(principal, "")
        if not role:
            raise PolicyError("%s is by %s, who has no role in rollback_signer_roles" % (where, principal),
                              "Principals with a role: %s." % (", ".join(sorted(signer_roles)) or "none"))
        if role not in roles:
            raise PolicyError("rollback_signer_roles gives %s the role %r, which is not a role (valid roles: %s)"
                              % (principal, role, ", ".join(roles)))
        if item["fingerprint"] in by_key:
            raise PolicyError("%s and %s are both signed by the key %s: one key counts as one approver"
                              % (by_key[item["fingerprint"]], name, item["fingerprint"]),
                              "A second approver signs with their own key.")
        if principal in by_principal:
            raise PolicyError("%s and %s are both signed by %s: one person counts as one approver"
                              % (by_principal[principal], name, principal), "A second approver signs with their own key.")
        by_key[item["fingerprint"]] = name
        by_principal[principal] = name
        out.append({"name": principal, "role": role, "ticket": ticket or "", "key": item["fingerprint"],
                    "signature": item["file"]})
    return out


def approvals_from_signatures(signatures, digest, approval, roles, ticket="", ssh_keygen="ssh-keygen"):
    """What ``_policy.run_stage`` calls for ``approval_signatures``: the files (directories expanded), checked
    against the inventory's allowed_signers and signer roles (``approval``: the action's ``approval`` option)."""
    approval = approval or {}
    allowed = approval.get("allowed_signers") or ""
    checked = check_signature_files(signature_paths(signatures), digest, allowed, ssh_keygen=ssh_keygen)
    return signed_approvals(checked, digest, approval.get("signer_roles") or {}, roles, ticket=ticket,
                            allowed_signers=allowed or "allowed_signers")
