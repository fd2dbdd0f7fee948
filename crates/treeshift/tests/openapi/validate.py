"""Checks the API's answers against its own OpenAPI description.

Reads one JSON document on stdin: {"spec": the description, "checks":
[[schema name, answer], ...]}. Each answer is validated (JSON Schema
2020-12, which OpenAPI 3.1 uses) against components.schemas[name], its
$refs resolved in the description. Prints each failure; exits 1 if any.
"""

import json
import sys

from jsonschema import Draft202012Validator

doc = json.load(sys.stdin)
spec = doc["spec"]
failures = 0
for name, answer in doc["checks"]:
    if name not in spec["components"]["schemas"]:
        print(f"{name}: no such schema in the description")
        failures += 1
        continue
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    for error in Draft202012Validator(schema).iter_errors(answer):
        path = "/".join(str(p) for p in error.absolute_path)
        print(f"{name} at /{path}: {error.message}")
        failures += 1
sys.exit(1 if failures else 0)
