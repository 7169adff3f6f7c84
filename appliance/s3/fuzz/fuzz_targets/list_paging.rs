#![no_main]
//! Paging through a listing in small pages returns exactly what one big page returns.
use dw_s3::listing::paginate;
use dw_s3::store::{ListEntry, ListQuery};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::time::SystemTime;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = usize::from(data[0] % 5) + 1;
    let delim = (data[1] % 2 == 0).then(|| "/".to_owned());
    let alphabet = [b'a', b'b', b'/'];
    let prefix: String = (0..usize::from(data[2] % 3))
        .map(|i| char::from(alphabet[i % 3]))
        .collect();
    let keys: BTreeSet<String> = data[3..]
        .chunks(4)
        .map(|c| {
            c.iter()
                .map(|b| char::from(alphabet[usize::from(*b) % 3]))
                .collect()
        })
        .collect();
    let entries: Vec<ListEntry> = keys
        .iter()
        .map(|k| ListEntry {
            key: k.clone(),
            size: 0,
            etag: String::new(),
            last_modified: SystemTime::UNIX_EPOCH,
        })
        .collect();
    let q = |sa: Option<String>, m: usize| ListQuery {
        prefix: prefix.clone(),
        delimiter: delim.clone(),
        start_after: sa,
        max_keys: m,
    };
    let full = paginate(entries.clone(), &q(None, 1000));
    let (mut objs, mut cps, mut marker) = (Vec::new(), Vec::new(), None);
    for _ in 0..2000 {
        let p = paginate(entries.clone(), &q(marker.clone(), max));
        assert!(p.objects.len() + p.common_prefixes.len() <= max);
        objs.extend(p.objects);
        cps.extend(p.common_prefixes);
        if !p.is_truncated {
            break;
        }
        marker = p.next_marker;
        assert!(marker.is_some());
    }
    assert_eq!(objs, full.objects);
    assert_eq!(cps, full.common_prefixes);
});
