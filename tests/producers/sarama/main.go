// A producer at Sarama's defaults (its hash partitioner: FNV-1a over the key), as a Go
// service would write streamer's events: one "key<TAB>value" line from stdin per message,
// headers reply_to and correlation_id when the line has a third and fourth field.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: sarama-producer BOOTSTRAP TOPIC < lines")
		os.Exit(2)
	}
	config := sarama.NewConfig()
	config.Producer.Return.Successes = true // a SyncProducer needs it; nothing else is changed
	producer, err := sarama.NewSyncProducer(strings.Split(os.Args[1], ","), config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer producer.Close()
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		fields := strings.Split(scanner.Text(), "\t")
		msg := &sarama.ProducerMessage{Topic: os.Args[2], Key: sarama.StringEncoder(fields[0]),
			Value: sarama.StringEncoder(fields[1])}
		if len(fields) == 4 {
			msg.Headers = []sarama.RecordHeader{
				{Key: []byte("reply_to"), Value: []byte(fields[2])},
				{Key: []byte("correlation_id"), Value: []byte(fields[3])}}
		}
		partition, _, err := producer.SendMessage(msg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			os.Exit(1)
		}
		fmt.Println(partition)
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "stdin:", err)
		os.Exit(1)
	}
}
