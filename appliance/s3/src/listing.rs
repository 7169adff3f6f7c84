//! The ListObjects paging rules, shared by every store.
//!
//! A store hands [`paginate`] its keys in ascending byte order (ideally already starting at
//! [`ListQuery::prefix`] or the marker, e.g. with a B-tree range) and gets the S3 page back.

use crate::store::{
    ListEntry, ListPage, ListQuery, MAX_LIST_KEYS, UploadInfo, UploadPage, UploadQuery,
};

/// Builds one ListObjects page from entries sorted by key.
///
/// Rules (as S3): only keys starting with `prefix`; with a delimiter, a key with the delimiter
/// after the prefix is rolled up into the common prefix ending at its first occurrence; keys and
/// common prefixes are returned only if strictly greater than `start_after` (so a marker that is
/// a common prefix skips everything under it); at most `max_keys` keys plus prefixes; when more
/// remain, `is_truncated` and `next_marker` = the last key or prefix returned.
///
/// Work is bounded by the number of entries the iterator yields; it stops at the first key past
/// the prefix range.
pub fn paginate<I>(entries: I, q: &ListQuery) -> ListPage
where
    I: IntoIterator<Item = ListEntry>,
{
    let mut page = ListPage::default();
    if q.max_keys == 0 {
        return page;
    }
    let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
    let start_after = q.start_after.as_deref();
    let mut count = 0usize;
    let mut last: Option<String> = None;
    for e in entries {
        if !e.key.starts_with(q.prefix.as_str()) {
            if e.key.as_str() > q.prefix.as_str() {
                break; // sorted: no later key can match the prefix
            }
            continue;
        }
        if start_after.is_some_and(|sa| e.key.as_str() <= sa) {
            continue;
        }
        let rolled = delimiter.and_then(|d| {
            let rest = &e.key[q.prefix.len()..];
            rest.find(d)
                .map(|pos| e.key[..q.prefix.len() + pos + d.len()].to_owned())
        });
        match rolled {
            Some(cp) => {
                if page.common_prefixes.last() == Some(&cp)
                    || start_after.is_some_and(|sa| cp.as_str() <= sa)
                {
                    continue;
                }
                if count == q.max_keys {
                    page.is_truncated = true;
                    break;
                }
                last = Some(cp.clone());
                page.common_prefixes.push(cp);
            }
            None => {
                if count == q.max_keys {
                    page.is_truncated = true;
                    break;
                }
                last = Some(e.key.clone());
                page.objects.push(e);
            }
        }
        count += 1;
    }
    if page.is_truncated {
        page.next_marker = last;
    }
    page
}

/// One page of ListMultipartUploads from every upload of a bucket (any order): prefix, then
/// strictly after (`key_marker`, `upload_id_marker`), sorted by key then upload id, at most
/// `max_uploads` (capped at [`MAX_LIST_KEYS`]).
pub fn paginate_uploads<I>(uploads: I, q: &UploadQuery) -> UploadPage
where
    I: IntoIterator<Item = UploadInfo>,
{
    let max = q.max_uploads.min(MAX_LIST_KEYS);
    let mut all: Vec<UploadInfo> = uploads
        .into_iter()
        .filter(|u| u.key.starts_with(q.prefix.as_str()))
        .filter(|u| match (&q.key_marker, &q.upload_id_marker) {
            (Some(k), Some(id)) => {
                (u.key.as_str(), u.upload_id.as_str()) > (k.as_str(), id.as_str())
            }
            (Some(k), None) => u.key.as_str() > k.as_str(),
            _ => true,
        })
        .collect();
    all.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
    let is_truncated = all.len() > max;
    all.truncate(max);
    UploadPage {
        uploads: all,
        is_truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::SystemTime;

    fn entries(keys: &[&str]) -> Vec<ListEntry> {
        let mut v: Vec<ListEntry> = keys
            .iter()
            .map(|k| ListEntry {
                key: (*k).to_owned(),
                size: 1,
                etag: String::new(),
                last_modified: SystemTime::UNIX_EPOCH,
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    fn q(prefix: &str, delim: Option<&str>, sa: Option<&str>, max: usize) -> ListQuery {
        ListQuery {
            prefix: prefix.into(),
            delimiter: delim.map(Into::into),
            start_after: sa.map(Into::into),
            max_keys: max,
        }
    }

    fn keys(p: &ListPage) -> Vec<&str> {
        p.objects.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn prefix_and_delimiter() {
        let es = entries(&["a/1", "a/2", "a/b/3", "b", "c/x", "ca"]);
        let p = paginate(es.clone(), &q("", Some("/"), None, 1000));
        assert_eq!(keys(&p), ["b", "ca"]);
        assert_eq!(p.common_prefixes, ["a/", "c/"]);
        assert!(!p.is_truncated);
        let p = paginate(es.clone(), &q("a/", Some("/"), None, 1000));
        assert_eq!(keys(&p), ["a/1", "a/2"]);
        assert_eq!(p.common_prefixes, ["a/b/"]);
        let p = paginate(es, &q("a", None, None, 1000));
        assert_eq!(keys(&p), ["a/1", "a/2", "a/b/3"]);
    }

    #[test]
    fn pages_cover_everything_once() {
        let es = entries(&["a/1", "a/2", "a/b/3", "b", "c/x", "ca", "d"]);
        let mut seen = Vec::new();
        let mut marker = None;
        for _ in 0..20 {
            let p = paginate(es.clone(), &q("", Some("/"), marker.as_deref(), 2));
            seen.extend(p.objects.iter().map(|e| e.key.clone()));
            seen.extend(p.common_prefixes.iter().cloned());
            if !p.is_truncated {
                break;
            }
            marker = p.next_marker;
        }
        seen.sort();
        assert_eq!(seen, ["a/", "b", "c/", "ca", "d"]);
    }

    #[test]
    fn max_keys_zero_is_empty() {
        let p = paginate(entries(&["a"]), &q("", None, None, 0));
        assert!(p.objects.is_empty() && !p.is_truncated);
    }

    proptest! {
        #[test]
        fn paging_equals_one_shot(
            ks in proptest::collection::btree_set("[ab/]{1,6}", 0..40),
            max in 1usize..5,
            delim in proptest::option::of(Just("/")),
            prefix in "[ab/]{0,2}",
        ) {
            let es = entries(&ks.iter().map(String::as_str).collect::<Vec<_>>());
            let full = paginate(es.clone(), &q(&prefix, delim, None, 1000));
            let mut objs = Vec::new();
            let mut cps = Vec::new();
            let mut marker = None;
            for _ in 0..100 {
                let p = paginate(es.clone(), &q(&prefix, delim, marker.as_deref(), max));
                prop_assert!(p.objects.len() + p.common_prefixes.len() <= max);
                objs.extend(p.objects);
                cps.extend(p.common_prefixes);
                if !p.is_truncated { break; }
                prop_assert!(p.next_marker.is_some());
                marker = p.next_marker;
            }
            prop_assert_eq!(objs, full.objects);
            prop_assert_eq!(cps, full.common_prefixes);
        }
    }
}
