#!/usr/bin/env bash
# Lists every public API declaration in Sources/**/*.swift that has no doc comment directly above it, and exits 1
# if there is any (0 when all are documented, 2 on a usage error):  bash scripts/check-docs.sh [DIR_OR_FILE...]
#
# Checked (a "declaration" is a code line, never a line inside a comment or a multi-line string):
#   - every `public` / `open` declaration: func, init, subscript, var, let, class, struct, enum, actor, protocol,
#     typealias, associatedtype, macro (`public import` is not a declaration; an `extension` line itself needs no
#     doc comment, but the public members inside it do);
#   - what is public without saying so: the requirements of a `public protocol`, the cases of a `public enum`,
#     and the members of a `public extension` that have no access modifier of their own;
#   - `package` declarations in the files listed in PACKAGE_FILES below.
# "Directly above" means the nearest line above, skipping attribute lines (`@discardableResult`, `@available(...)`,
# also written over several lines) and `// swift-format-ignore` directives, is a `///` line or the end of a `/** ... */` comment. A blank line or a `// MARK:` in between does not count.
# Output: one `path:line: declaration` line per finding, then a summary line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v python3 >/dev/null 2>&1 || { echo "check-docs.sh: python3 is required" >&2; exit 2; }

exec python3 - "$@" <<'PYTHON'
import os
import re
import sys

PACKAGE_FILES = {"Sources/WSCore/Model/HTTPHeaders.swift"}

MODIFIERS = (
    r"(?:final|static|class|override|nonisolated|mutating|nonmutating|convenience|required|lazy|weak|unowned|"
    r"dynamic|indirect|prefix|postfix|infix|optional|consuming|borrowing|distributed|"
    r"(?:private|fileprivate|internal|package|public|open)\s*\(\s*set\s*\))"
)
ATTRIBUTE = r"@[A-Za-z_][\w.]*(?:\([^()]*(?:\([^()]*\)[^()]*)*\))?"
KEYWORDS = r"(func|init[?!]?|subscript|var|let|class|struct|enum|actor|protocol|typealias|associatedtype|macro|extension|import|case)"
EXPLICIT = re.compile(
    rf"^(?:{ATTRIBUTE}\s*)*(?:{MODIFIERS}\s+)*(public|open|package)(?!\s*\(\s*set\s*\))\s+"
    rf"(?:{MODIFIERS}\s+)*{KEYWORDS}(?![\w])"
)
IMPLICIT = re.compile(rf"^(?:{ATTRIBUTE}\s*)*(?:{MODIFIERS}\s+)*{KEYWORDS}(?![\w])")
OTHER_ACCESS = re.compile(r"^(?:@\S+\s*)*(?:\w+\s+)*(private|fileprivate|internal)(?!\s*\(\s*set\s*\))\b")


def lex(text):
    """Yields (line_number, code, starts_in_comment_or_string, raw_line) with strings blanked and comments removed.

    Handles // and nested /* */ comments, "..." and multi-line \"\"\" strings, raw strings (#"..."#) and string
    interpolation \\( ... ) with nested strings.
    """
    # Stack of contexts: ("code", paren_depth) | ("str", pounds, multiline) | ("block", depth)
    stack = [("code", 0)]
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        starts_inside = stack[-1][0] != "code"
        code = []
        i = 0
        n = len(line)
        while i < n:
            top = stack[-1]
            ch = line[i]
            if top[0] == "block":
                if line.startswith("/*", i):
                    stack[-1] = ("block", top[1] + 1)
                    i += 2
                elif line.startswith("*/", i):
                    if top[1] == 1:
                        stack.pop()
                    else:
                        stack[-1] = ("block", top[1] - 1)
                    i += 2
                else:
                    i += 1
                continue
            if top[0] == "str":
                _, pounds, multiline = top
                escape = "\\" + "#" * pounds
                if line.startswith(escape + "(", i):
                    stack.append(("code", 1))
                    code.append("(")
                    i += len(escape) + 1
                    continue
                if pounds == 0 and ch == "\\":
                    i += 2
                    continue
                close = ('"""' if multiline else '"') + "#" * pounds
                if line.startswith(close, i):
                    stack.pop()
                    code.append('"')
                    i += len(close)
                    continue
                i += 1
                continue
            # code
            if line.startswith("//", i):
                break
            if line.startswith("/*", i):
                stack.append(("block", 1))
                i += 2
                continue
            m = re.match(r'(#*)("""|")', line[i:])
            if m and (ch == '"' or ch == "#"):
                pounds = len(m.group(1))
                multiline = m.group(2) == '"""'
                stack.append(("str", pounds, multiline))
                code.append('"')
                i += len(m.group(0))
                continue
            if ch == "(":
                stack[-1] = ("code", top[1] + 1)
            elif ch == ")":
                if len(stack) > 1 and top[1] == 1:
                    stack.pop()  # end of an interpolation
                    code.append(")")
                    i += 1
                    continue
                stack[-1] = ("code", max(0, top[1] - 1))
            code.append(ch)
            i += 1
        # A single-line string cannot continue on the next line: recover from unbalanced quotes.
        while stack[-1][0] == "str" and not stack[-1][2]:
            stack.pop()
        yield number, "".join(code), starts_inside, line


def documented(raw_lines, index, inside):
    """Whether the declaration at raw_lines[index] has a doc comment directly above (attributes skipped)."""
    j = index - 1
    while j >= 0:
        stripped = raw_lines[j].strip()
        if stripped.startswith("@") and not inside[j]:
            j -= 1
            continue
        if stripped.startswith(")") and not inside[j]:
            # The end of an attribute written over several lines (`@available(\n ... \n)`): skip to its `@`.
            k = j - 1
            while k >= 0 and not raw_lines[k].strip().startswith("@"):
                k -= 1
            if k < 0:
                return False
            j = k - 1
            continue
        if stripped.startswith("// swift-format-ignore"):
            j -= 1
            continue
        if stripped.startswith("///"):
            return True
        if stripped.endswith("*/"):
            k = j
            while k >= 0 and "/*" not in raw_lines[k]:
                k -= 1
            return k >= 0 and raw_lines[k].strip().startswith("/**")
        return False
    return False


def check(path, relative):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    lexed = list(lex(text))
    raw_lines = [raw for _, _, _, raw in lexed]
    inside = [starts for _, _, starts, _ in lexed]
    findings = []
    depth = 0
    # Open bodies whose direct members are public without saying so: (depth_inside_body, kind)
    scopes = []
    pending = None  # kind of an implicitly-public scope whose `{` has not been seen yet
    for index, (number, code, starts_inside, raw) in enumerate(lexed):
        stripped = code.strip()
        line_depth = depth
        if stripped and not starts_inside:
            explicit = EXPLICIT.match(stripped)
            implicit = None if explicit else IMPLICIT.match(stripped)
            keyword = None
            needs_doc = False
            if explicit:
                access, keyword = explicit.group(1), explicit.group(2)
                if keyword not in ("import", "extension", "case"):
                    needs_doc = access in ("public", "open") or relative in PACKAGE_FILES
                if access in ("public", "open"):
                    if keyword == "protocol":
                        pending = "protocol"
                    elif keyword == "enum":
                        pending = "enum"
                    elif keyword == "extension":
                        pending = "extension"
            elif implicit and scopes and scopes[-1][0] == line_depth:
                keyword = implicit.group(1)
                kind = scopes[-1][1]
                if kind == "protocol":
                    needs_doc = keyword in ("func", "init", "init?", "init!", "subscript", "var", "associatedtype",
                                            "typealias")
                elif kind == "enum":
                    needs_doc = keyword == "case"
                elif kind == "extension":
                    needs_doc = keyword not in ("import", "extension", "case") and not OTHER_ACCESS.match(stripped)
            if needs_doc and not documented(raw_lines, index, inside):
                findings.append(f"{relative}:{number}: {raw.strip()}")
        for ch in code:
            if ch == "{":
                depth += 1
                if pending is not None:
                    scopes.append((depth, pending))
                    pending = None
            elif ch == "}":
                if scopes and scopes[-1][0] == depth:
                    scopes.pop()
                depth = max(0, depth - 1)
    return findings


def main(arguments):
    targets = arguments or ["Sources"]
    files = []
    for target in targets:
        if os.path.isfile(target):
            files.append(target)
        elif os.path.isdir(target):
            for directory, subdirectories, names in os.walk(target):
                subdirectories.sort()
                files.extend(os.path.join(directory, name) for name in sorted(names) if name.endswith(".swift"))
        else:
            print(f"check-docs.sh: no such file or directory: {target}", file=sys.stderr)
            return 2
    findings = []
    for path in files:
        relative = os.path.relpath(path).replace(os.sep, "/")
        findings.extend(check(path, relative))
    for finding in findings:
        print(finding)
    if findings:
        print(f"check-docs.sh: {len(findings)} public declaration(s) without a doc comment in {len(files)} files")
        return 1
    print(f"check-docs.sh: every public declaration has a doc comment ({len(files)} files checked)")
    return 0


sys.exit(main(sys.argv[1:]))
PYTHON
