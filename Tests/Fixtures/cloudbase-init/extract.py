#!/usr/bin/env python3
"""Lists Cloudbase-Init's configuration options and plugin / metadata-service classes from its source tree.

Usage: extract.py CLOUDBASE_INIT_TREE OSLO_LOG_TREE > cloudbase-init-names.txt
Lines: `option GROUP NAME` (deprecated names: `deprecated GROUP NAME -> GROUP.NEW [for-removal]`),
`plugin MODULE.CLASS`, `service MODULE.CLASS`. Reads the Python sources with `ast`; runs nothing from them.
"""
import ast
import os
import re
import sys


def options(path, default_group):
    src = open(path).read()
    m = re.search(r'__init__\(\s*config\s*,\s*group\s*=\s*["\']([A-Za-z_]+)["\']', src)
    group = m.group(1) if m else default_group
    out = []
    for node in ast.walk(ast.parse(src)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.endswith("Opt")
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            continue
        if node.func.attr == "DeprecatedOpt":
            continue
        name = node.args[0].value.replace("-", "_")
        kw = {k.arg: k.value for k in node.keywords}
        out.append(f"option {group} {name}")
        removal = " for-removal" if isinstance(kw.get("deprecated_for_removal"), ast.Constant) and kw["deprecated_for_removal"].value else ""
        if isinstance(kw.get("deprecated_for_removal"), ast.Constant) and kw["deprecated_for_removal"].value:
            out.append(f"deprecated {group} {name} -> {group}.{name} for-removal")
        if isinstance(kw.get("deprecated_name"), ast.Constant):
            dgroup = kw["deprecated_group"].value if isinstance(kw.get("deprecated_group"), ast.Constant) else group
            out.append(f"deprecated {dgroup} {kw['deprecated_name'].value.replace('-', '_')} -> {group}.{name}{removal}")
        if isinstance(kw.get("deprecated_opts"), ast.List):
            for d in kw["deprecated_opts"].elts:
                if isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant):
                    dk = {k.arg: k.value for k in d.keywords}
                    dgroup = dk["group"].value if isinstance(dk.get("group"), ast.Constant) else group
                    out.append(f"deprecated {dgroup} {d.args[0].value.replace('-', '_')} -> {group}.{name}{removal}")
    return out


def classes(root, package, suffix, kind):
    out = []
    for dirpath, _, files in os.walk(os.path.join(root, *package.split("."))):
        for f in sorted(files):
            if not f.endswith(".py") or f == "__init__.py":
                continue
            module = os.path.relpath(os.path.join(dirpath, f[:-3]), root).replace(os.sep, ".")
            for node in ast.parse(open(os.path.join(dirpath, f)).read()).body:
                if isinstance(node, ast.ClassDef) and node.name.endswith(suffix) and not node.name.startswith("Base"):
                    out.append(f"{kind} {module}.{node.name}")
    return out


cbi, oslo = sys.argv[1], sys.argv[2]
lines = []
for f in sorted(os.listdir(os.path.join(cbi, "cloudbaseinit", "conf"))):
    if f.endswith(".py"):
        lines += options(os.path.join(cbi, "cloudbaseinit", "conf", f), "DEFAULT")
lines += options(os.path.join(oslo, "oslo_log", "_options.py"), "DEFAULT")
lines += classes(cbi, "cloudbaseinit.plugins", "Plugin", "plugin")
lines += classes(cbi, "cloudbaseinit.metadata.services", "Service", "service")
print("\n".join(sorted(set(lines))))
