"""chromadb 1.5.9's tests of the Search API, bodies unchanged (see conftest.py): every test of
``chromadb/test/api/test_search_api.py``, and the search tests of the filtering, add and
embeddings property suites."""

from chromadb.test.api.test_search_api import *  # noqa: F403
from chromadb.test.property.test_add import test_search_group_by  # noqa: F401
from chromadb.test.property.test_embeddings import test_embeddings_state_with_search  # noqa: F401
from chromadb.test.property.test_filtering import (  # noqa: F401
    test_filterable_metadata_query_via_search,
    test_filterable_metadata_search,
)
