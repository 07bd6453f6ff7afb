"""The licence of every distribution the default install of osteoscreen pulls in (its requirements without extras,
followed recursively through the installed metadata), one line each; exit 1 if any is copyleft (GPL, AGPL or
LGPL, not counting runtime-library exceptions such as GCC's), so that nothing copyleft enters an Apache-2.0
tool's default install. `make test` runs it.

A distribution's licence is its License-Expression (PEP 639), else its License field when that is a name (one
short line), else its "License ::" classifiers. Usage: python scripts/licences.py [distribution]  (default osteoscreen)
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

COPYLEFT = re.compile(r"\b(A?GPL|LGPL|GNU (Affero |Lesser |Library )?General Public)", re.IGNORECASE)
#: License fields that name no licence: "UNKNOWN", or the name of a file (dicomweb-client says "LICENSE").
NOT_A_NAME = re.compile(r"^(UNKNOWN|LICEN[CS]E(\.\w+)?)$", re.IGNORECASE)
EXCEPTION = re.compile(r"exception", re.IGNORECASE)  # GPL-3.0-with-GCC-exception: runtime libraries, permissive


def licence(name: str) -> str:
    meta = distribution(name).metadata
    expression = (meta.get("License-Expression") or "").strip()
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    text = (meta.get("License") or "").strip()
    named = text and "\n" not in text and len(text) < 80 and not NOT_A_NAME.match(text)
    one_line = text if named else ""
    return expression or one_line or "; ".join(classifiers) or ("(full text in the metadata)" if text else
                                                                 "(not stated)")


def default_install(root: str) -> list[str]:
    """root and every distribution its requirements (no extras) need, in discovery order."""
    environment = {**default_environment(), "extra": ""}
    seen, order, pending = set(), [], [root]
    while pending:
        name = canonicalize_name(pending.pop(0))
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = distribution(name).requires or []
        except PackageNotFoundError:
            raise SystemExit(f"licences: {name} is required but not installed") from None
        order.append(name)
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pending.append(requirement.name)
    return order


def copyleft(text: str) -> bool:
    return bool(COPYLEFT.search(text)) and not EXCEPTION.search(text)


def main(argv: list[str]) -> int:
    root = argv[0] if argv else "osteoscreen"
    rows = [(name, licence(name)) for name in default_install(root)]
    width = max(len(name) for name, _ in rows)
    bad = []
    for name, text in rows:
        flag = copyleft(text)
        bad += [name] if flag else []
        print(f"{name:<{width}}  {text}{'   <- copyleft' if flag else ''}")
    if bad:
        print(f"licences: {len(bad)} copyleft distribution(s) in the default install: {', '.join(bad)}",
              file=sys.stderr)
        return 1
    print(f"licences: {len(rows)} distributions in the default install, none copyleft")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
