"""The SMS spam exercise as a plain script: lower case, letters only, NLTK stop words removed,
WordNet lemmas, 3,000-word count vectors, half the messages (stratified) for testing,
Dense 64-1, adam, 10 epochs, batch 32 (as configs/sms_spam.yaml).

    NLTK_DATA=../shared/nltk_data python benchmarks/baselines/sms_keras.py ../shared/data/sms/SMSSpamCollection [--seed S]
"""

import re

import keras
import numpy as np
from bench_hooks import DATA, SEED, FirstBatch, report
from nltk.corpus import stopwords
from nltk.stem import WordNetLemmatizer
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import train_test_split

labels, texts = [], []
with open(DATA, encoding="utf-8") as f:
    for line in f:
        label, text = line.rstrip("\n").split("\t", 1)
        labels.append(1 if label == "spam" else 0)
        texts.append(text)

stop = set(stopwords.words("english"))
lemmatizer = WordNetLemmatizer()


def clean(text):
    words = re.findall(r"[a-z]+", text.lower())
    return " ".join(lemmatizer.lemmatize(w) for w in words if w not in stop)


docs = [clean(t) for t in texts]
d_train, d_test, y_train, y_test = train_test_split(docs, np.array(labels, "float32"), test_size=0.5, stratify=labels, random_state=SEED)
vectorizer = CountVectorizer(max_features=3000)
x_train = vectorizer.fit_transform(d_train).toarray().astype("float32")
x_test = vectorizer.transform(d_test).toarray().astype("float32")

keras.utils.set_random_seed(SEED)
model = keras.Sequential([keras.Input((x_train.shape[1],)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=10, batch_size=32, callbacks=[FirstBatch()])
loss, accuracy = model.evaluate(x_test, y_test)
print(f"test accuracy {accuracy:.4f}")
report(accuracy)
