"""Validates replpool's /openapi.json as OpenAPI 3.1 with openapi-spec-validator.

    python tests/openapi/validate.py <url of /openapi.json | path of a saved document>

Exits 0 when the document is valid, 1 with the validator's findings when it is not.
"""

import json
import sys
import urllib.request

from openapi_spec_validator import OpenAPIV31SpecValidator


def load(source):
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as response:
            return json.load(response)
    with open(source, encoding="utf-8") as f:
        return json.load(f)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    document = load(argv[1])
    if document.get("openapi", "").rsplit(".", 1)[0] != "3.1":
        print(f"not OpenAPI 3.1: openapi = {document.get('openapi')!r}", file=sys.stderr)
        return 1
    errors = list(OpenAPIV31SpecValidator(document).iter_errors())
    for error in errors:
        print(f"{'/'.join(map(str, error.absolute_path)) or '/'}: {error.message}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} problem(s) in the document", file=sys.stderr)
        return 1
    print(f"valid OpenAPI {document['openapi']}: {len(document.get('paths', {}))} paths")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
