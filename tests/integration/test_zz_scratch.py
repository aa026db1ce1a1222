import uuid
from confluent_kafka.admin import AdminClient
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from tests.integration.test_acl_console_watch import _principal, _ConsoleJob
from govbus.consumers._lag import sink_lag

def test_scratch(secure_kafka, tmp_path):
    job = _ConsoleJob(secure_kafka, tmp_path)
    print("admin list", [g.group_id for g in secure_kafka.admin.list_consumer_groups(request_timeout=10).result(10).valid])
    user, pw = _principal(secure_kafka, job.plan())
    conf = secure_kafka.scram_config(user, pw)
    a = AdminClient(conf)
    r = a.list_consumer_groups(request_timeout=10).result(10)
    print("user list", [g.group_id for g in r.valid], r.errors)
    print(a.describe_consumer_groups([job.group], request_timeout=10)[job.group].result(10))
    print(sink_lag(conf, timeout=10))
