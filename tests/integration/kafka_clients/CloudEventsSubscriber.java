import io.cloudevents.CloudEvent;
import io.cloudevents.kafka.CloudEventDeserializer;
import io.cloudevents.types.Time;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RecordDeserializationException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * A subscriber of the version notifications on the CloudEvents Java SDK's Kafka binding, as
 * tests/integration/test_cloudevents_java_sdk.py runs it: the consumer's value deserializer is
 * io.cloudevents.kafka.CloudEventDeserializer (binary content mode: ce_* headers and content-type), with the
 * client's settings from the properties file args[0]; it reads the topic args[1] from the beginning up to the end
 * offsets it found at start.
 * stdout: one JSON object per event (partition, offset, every attribute, every extension, the data length), and
 * "FAILED partition offset exception" per record the SDK cannot read (the reading goes on after it); exit code 3
 * when any record failed, 0 otherwise.
 */
public final class CloudEventsSubscriber {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (InputStream in = Files.newInputStream(Path.of(args[0]))) {
            props.load(in);
        }
        String topic = args[1];
        int failed = 0;
        try (KafkaConsumer<byte[], CloudEvent> consumer =
                new KafkaConsumer<>(props, new ByteArrayDeserializer(), new CloudEventDeserializer())) {
            List<TopicPartition> parts = new ArrayList<>();
            consumer.partitionsFor(topic).forEach(p -> parts.add(new TopicPartition(topic, p.partition())));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> end = consumer.endOffsets(parts);
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (parts.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))) {
                if (System.nanoTime() > deadline) {
                    System.out.println("FAILED -1 -1 timed out before the end offsets " + end);
                    System.exit(4);
                }
                try {
                    for (ConsumerRecord<byte[], CloudEvent> r : consumer.poll(Duration.ofMillis(500))) {
                        if (r.offset() < end.get(new TopicPartition(r.topic(), r.partition()))) {
                            System.out.println(json(r.partition(), r.offset(), r.value()));
                        }
                    }
                } catch (RecordDeserializationException e) {
                    failed++;
                    Throwable cause = e.getCause() != null ? e.getCause() : e;
                    System.out.println("FAILED " + e.topicPartition().partition() + " " + e.offset() + " "
                            + cause.getClass().getName() + ": " + cause.getMessage()
                            + (cause.getCause() != null ? " (caused by " + cause.getCause() + ")" : ""));
                    consumer.seek(e.topicPartition(), e.offset() + 1); // the subscriber skips it and goes on
                }
            }
        }
        System.exit(failed > 0 ? 3 : 0);
    }

    static String json(int partition, long offset, CloudEvent e) {
        StringBuilder s = new StringBuilder("{");
        field(s, "partition", String.valueOf(partition), false);
        field(s, "offset", String.valueOf(offset), false);
        field(s, "specversion", e.getSpecVersion().toString(), true);
        field(s, "id", e.getId(), true);
        field(s, "source", e.getSource() == null ? null : e.getSource().toString(), true);
        field(s, "type", e.getType(), true);
        field(s, "time", e.getTime() == null ? null : Time.writeTime(e.getTime()), true);
        field(s, "datacontenttype", e.getDataContentType(), true);
        field(s, "dataschema", e.getDataSchema() == null ? null : e.getDataSchema().toString(), true);
        field(s, "subject", e.getSubject(), true);
        s.append("\"extensions\":{");
        boolean first = true;
        for (String name : new TreeSet<>(e.getExtensionNames())) {
            if (!first) {
                s.append(',');
            }
            first = false;
            Object v = e.getExtension(name);
            s.append(quote(name)).append(':').append(quote(v == null ? null : v.toString()));
        }
        s.append("},");
        s.append("\"data_length\":").append(e.getData() == null ? -1 : e.getData().toBytes().length);
        return s.append('}').toString();
    }

    static void field(StringBuilder s, String name, String value, boolean text) {
        s.append(quote(name)).append(':').append(text ? quote(value) : value).append(',');
    }

    static String quote(String v) {
        if (v == null) {
            return "null";
        }
        StringBuilder s = new StringBuilder("\"");
        for (char c : v.toCharArray()) {
            switch (c) {
                case '"' -> s.append("\\\"");
                case '\\' -> s.append("\\\\");
                default -> {
                    if (c < 0x20 || c > 0x7e) {
                        s.append(String.format("\\u%04x", (int) c));
                    } else {
                        s.append(c);
                    }
                }
            }
        }
        return s.append('"').toString();
    }
}
