# A real Open Inference Protocol v2 server: MLServer in a Python virtual
# environment, serving a scikit-learn model trained on iris (deploy/mlserver/).
MLSERVER_DEPLOY := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/mlserver

.PHONY: mlserver mlserver-stop mlserver-status

## mlserver: start MLServer on 127.0.0.1 (REST 8080, gRPC 8083; set
## ASYNCINFER_MLSERVER_HTTP_PORT / _GRPC_PORT, "free" for any) serving the
## models iris and iris-adaptive, and print its URL; the first run installs
## MLServer from PyPI and trains the model, a warm run rebuilds nothing
mlserver:
	@$(MLSERVER_DEPLOY)/mlserver.sh start

## mlserver-stop: stop the MLServer that `make mlserver` started
mlserver-stop:
	@$(MLSERVER_DEPLOY)/mlserver.sh stop

## mlserver-status: say whether it is running and its models ready
mlserver-status:
	@$(MLSERVER_DEPLOY)/mlserver.sh status || [ $$? -eq 3 ]
