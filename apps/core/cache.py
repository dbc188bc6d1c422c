"""The shared cache's serializer: JSON, never pickle.

Django's RedisCache pickles every value that is not an int, and unpickles whatever it reads back: anyone who can
write to that Redis could then run code in every web worker. ClinPredict keeps only counters and markers there (rate
limits, token lockouts, CDS Hooks jti marks), so JSON is enough, and a value that is not JSON fails loudly when it is
written rather than becoming a way in when it is read. Integers stay raw, as Django's own serializer keeps them, so
Redis INCR works on them.
"""

import json
from typing import Any


class JSONSerializer:
    def dumps(self, obj: Any) -> int | bytes:
        if type(obj) is int:  # not bool: bool is an int subclass and would come back as 0/1
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            return json.loads(data)
