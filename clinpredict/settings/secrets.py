"""Settings from files: `<NAME>_FILE` (a Docker or Kubernetes secret mounted as a file) wins over `<NAME>`.

django-environ's FileAwareEnv does the lookup; this adds what a deployment needs on top of it: the trailing newline
that `echo` or an editor leaves in a secret file is dropped (a URL or password with a newline in it fails later and
obscurely), and a `_FILE` that points at nothing stops start-up with one message naming the variable, instead of a
traceback about some path.
"""

from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured
from environ.fileaware_mapping import FileAwareMapping


class SecretFileMapping(FileAwareMapping):
    def __getitem__(self, key: str) -> Any:
        path = self.env.get(key + "_FILE")
        if not path:
            return self.env[key]
        if key not in self.files_cache:
            try:
                with open(path, encoding="utf-8") as handle:
                    self.files_cache[key] = handle.read().rstrip("\r\n")
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"{key}_FILE={path}: cannot read the secret file ({exc.strerror or type(exc).__name__}); "
                    f"mount it there or unset {key}_FILE."
                ) from None
        return self.files_cache[key]


class SecretFileEnv(environ.Env):
    ENVIRON = SecretFileMapping()
