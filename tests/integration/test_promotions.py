"""A research finding promoted by the researcher becomes an explorer seed, once."""
import pytest

from shared import txn
from shared.clock import Clock
from shared.config import load_config

pytestmark = pytest.mark.integration


def test_promotions_become_seeds_once(broker, client):
    from services.modules.explorer.service import ExplorerService
    promo = {"finding_id": "f1", "text": "Why does 168 appear in both PSL(2,7) and the Klein quartic?",
             "type": "question", "priority": 7, "tags": ["symmetry"], "source": "researcher:finding:f1",
             "by": "user", "at": 0}
    client.txn("researcher", [txn.put("promotions/f1", promo, if_version=0)])
    svc = ExplorerService(load_config(broker.config_path), Clock())
    svc.initialize()
    try:
        svc.import_promotions()
        seeds = [item["value"] for item in client.kv_scan("explorer", prefix="seeds/")["items"]]
        assert len(seeds) == 1 and seeds[0]["text"] == promo["text"] and seeds[0]["type"] == "question"
        assert seeds[0]["priority"] == 7 and seeds[0]["source"] == "researcher:finding:f1"
        # removed by the user: not imported again
        client.txn("explorer", [txn.delete(f"seeds/{seeds[0]['id']}")])
        svc.import_promotions()
        assert client.kv_scan("explorer", prefix="seeds/")["items"] == []
    finally:
        svc.shutdown()
