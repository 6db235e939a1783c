"""Validates OCSF events (one JSON object a line, from a file or stdin)
against the OCSF schema version each event names, with the profiles it
lists: ocsf-json-schema builds the JSON Schema of the event's class from the
OCSF schema it packages; jsonschema checks the event against it. Prints one
line per event class and a total; exit status 1 if any event fails."""
import collections
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

schemas = {}
validators = {}
failures = 0
seen = collections.Counter()
source = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
for n, line in enumerate(source, 1):
    if not line.strip():
        continue
    event = json.loads(line)
    version = event["metadata"]["version"]
    profiles = tuple(sorted(event["metadata"].get("profiles", [])))
    if version not in schemas:
        schemas[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
    key = (version, event["class_uid"], profiles)
    if key not in validators:
        name = schemas[version].lookup_class_name_from_uid(class_uid=event["class_uid"])
        schema = schemas[version].get_class_schema(class_name=name, profiles=list(profiles))
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[key] = (name, jsonschema.Draft202012Validator(schema))
    name, validator = validators[key]
    errors = sorted(validator.iter_errors(event), key=lambda e: list(e.path))
    seen[(event["class_uid"], name)] += 1
    for e in errors:
        failures += 1
        print(f"line {n}: class {event['class_uid']} ({name}) at /{'/'.join(map(str, e.path))}: {e.message}")
for (uid, name), count in sorted(seen.items()):
    print(f"class {uid} {name}: {count} events")
print(f"{sum(seen.values())} events, {failures} schema violations")
sys.exit(1 if failures or not seen else 0)
