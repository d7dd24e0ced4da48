# Apache Kafka for development and the integration suite: a broker as a local
# process, or the container image built without a registry (deploy/kafka/).
KAFKA_DEPLOY := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/kafka

.PHONY: kafka kafka-stop kafka-status kafka-image kafka-engine

## kafka: start Apache Kafka 4.x as a local process (KRaft, 127.0.0.1) and
## print its address; ASYNCINFER_KAFKA_PORT picks the port (9092)
kafka:
	@$(KAFKA_DEPLOY)/kafka-local.sh start

## kafka-stop: stop the broker that `make kafka` started
kafka-stop:
	@$(KAFKA_DEPLOY)/kafka-local.sh stop

## kafka-status: say whether that broker is running and answering
kafka-status:
	@$(KAFKA_DEPLOY)/kafka-local.sh status || [ $$? -eq 3 ]

## kafka-image: build the image localhost/asyncinfer-kafka:<version> with
## podman (set up from Debian if missing); a warm run rebuilds nothing
kafka-image:
	@$(KAFKA_DEPLOY)/build-image.sh

## kafka-engine: serve podman's Docker API for testcontainers; prints the
## DOCKER_HOST to use (with TESTCONTAINERS_RYUK_DISABLED=true)
kafka-engine:
	@$(KAFKA_DEPLOY)/podman-service.sh start
