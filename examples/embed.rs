//! Embedding tidings: start the server on its own threads and publish into a channel from
//! the host program, as an edge appliance does with its sensor readings.
//!
//! Run it, then watch the channel from another shell:
//!
//! ```text
//! cargo run --example embed
//! curl -N 'http://127.0.0.1:8080/pull?name=me&channel=sensors'
//! curl 'http://127.0.0.1:8080/comet?method=get&channel=sensors&time=0'
//! ```

use std::time::Duration;

use tidings::{Config, Draft, Server};

fn main() {
    let config = Config {
        workers: 1,
        ..Config::default()
    };
    let server = Server::start(config).expect("start tidings");
    println!(
        "tidings on {}; publishing to channel 'sensors' once a second",
        server.local_addr()
    );

    let handle = server.handle();
    let publisher = std::thread::spawn(move || {
        for reading in 0..u32::MAX {
            let body = format!("{{\"temperature\":{}}}", 20 + reading % 5);
            let draft = Draft {
                from: "sensor-1".into(),
                ..Draft::with_body(body)
            };
            match handle.publish("sensors", draft) {
                Ok(seq) => println!("published reading {reading} as seq {seq}"),
                Err(e) => eprintln!("publish failed: {e}"),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    server.join();
    let _ = publisher.join();
}
