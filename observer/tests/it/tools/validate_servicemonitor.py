# The ServiceMonitor against the prometheus-operator CRD models (cloudcoil-models-prometheus-operator):
# kubernetes-validate knows only the built-in kinds. Used by the deploy tests (observer/tests/it/deploy.rs).
import sys, yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
for path in sys.argv[1:]:
    doc = yaml.safe_load(open(path))
    sm = ServiceMonitor.model_validate(doc)
    # The models drop keys they do not know: a round trip that loses one is an error.
    back = sm.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if back != doc:
        sys.exit(f"{path}: keys unknown to the ServiceMonitor schema: {doc} != {back}")
    print(f"{path}: valid ServiceMonitor")
